"""The precision policy is in every model stage's id (through its `compute`), and only where it decides
something: CPU stages compute in fp32 whatever `precision.cuda` says."""
from test_ids import assert_diff, assert_same, plan_of

MODEL_ROLES = ("activations", "steer", "evaluate/base", "attack/base", "score/offline/evaluate/base")


def with_attack(project):
    return project.minimal + "attack:\n  prompts: {kind: jsonl, path: prompts.jsonl}\n  variants: [base]\n"


def test_a_gpu_stage_computes_in_the_policy_and_a_cpu_stage_in_fp32(project):
    gpu = with_attack(project) + "resources:\n  default: {gpus: 1}\n  score: {gpus: 1}\n"
    plan = plan_of(project, gpu)
    (run,) = plan.runs
    for role in MODEL_ROLES:
        assert plan.instances[run.roles[role]].config.compute.label == "cuda-bf16", role
    cpu = plan_of(project, with_attack(project))
    for role in MODEL_ROLES:
        assert cpu.instances[cpu.runs[0].roles[role]].config.compute.label == "cpu-fp32", role
    assert plan.instances[run.roles["probe"]].resources.gpus == 0   # the default probe fit never uses a GPU


def test_precision_moves_gpu_stage_ids_only(project):
    cpu = with_attack(project)
    gpu = cpu + "resources:\n  default: {gpus: 1}\n"
    tf32 = gpu + "precision: {cuda: tf32}\n"
    for role in ("activations", "steer", "evaluate/base", "attack/base"):
        assert_diff(project, cpu, gpu, role)          # CPU-fp32 and GPU-bf16 results never share an id
        assert_diff(project, gpu, tf32, role)
        assert_same(project, cpu, cpu + "precision: {cuda: tf32}\n", role)   # CPU is fp32 either way
    for role in ("mix", "pretrain"):                  # stages without a `compute` keep their ids
        assert_same(project, gpu, tf32, role)
