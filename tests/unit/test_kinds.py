"""One table of stage kinds (`compiler.kinds`): the runtime registry, the rule order and the resources section
all follow it, and every kind it names has an implementation with the stage face."""
from compiler.kinds import KIND_ORDER, KINDS, NO_GPU_KINDS
from compiler.schema.resources import ResourcesSection
from runtime.registry import STAGES, load_stage


def test_the_registry_and_the_resources_section_follow_the_table():
    assert list(STAGES) == list(KIND_ORDER) and len(set(KIND_ORDER)) == len(KINDS)
    assert set(KIND_ORDER) == set(ResourcesSection.model_fields) - {"default"}
    unset = ResourcesSection(default={"gpus": 1})
    assert {k for k in KIND_ORDER if unset.of(k).gpus == 0} == set(NO_GPU_KINDS)


def test_every_kind_has_a_stage_module_with_the_stage_face():
    for kind in KIND_ORDER:
        module = load_stage(kind)
        assert isinstance(module.VERSION, int) and callable(module.run) and hasattr(module.Config, "model_validate"), kind
