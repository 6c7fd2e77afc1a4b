# mixsteer workflow. Thin on purpose: the compiler turns each spec into build/<spec>/ and a rules file;
# the stage JSONs and readable aliases are written when a run starts (onstart).
#   snakemake --cores all                                  # specs/demo.yaml
#   snakemake --cores all --config spec=specs/x.yaml       # another spec
#   snakemake --cores all --config 'spec=[specs/a.yaml,specs/b.yaml]'
#   snakemake -n                                           # dry run: what would run
from compiler.snakemake_entry import load_workflow
from runtime.sources import SOURCE_READER

MIXSTEER = load_workflow(config, workflow.basedir)


include: MIXSTEER.rules_file


onstart:
    MIXSTEER.prepare_run(SOURCE_READER)  # the runtime's readers, for the local-source check


rule all:
    default_target: True
    input:
        MIXSTEER.targets,
