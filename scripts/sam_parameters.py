#!/usr/bin/env python3
"""The stack parameters `make deploy` builds and deploys with, so the two agree.

`sam build` hands make only ARTIFACTS_DIR: the template's Architecture never reaches the build.
And `--parameter-overrides` on the command line replaces samconfig.toml's parameter_overrides
instead of adding to them. So `make deploy ARCH=...` resolves the parameters once, here — the
config environment's parameter_overrides (what `sam deploy --guided` saved), with Architecture
set to ARCH when ARCH is given — writes them to a file, and passes that same file to
`sam build`, `sam validate` and `sam deploy`.

  sam_parameters.py [--config-env ENV] [--arch ARCH] --out FILE.yaml    writes FILE, prints the architecture

Run with .venv/bin/python: it reads samconfig.toml and the overrides with the SAM CLI's own code.
"""

import argparse
import os
import sys

import yaml
from samcli.cli.types import CfnParameterOverridesType
from samcli.lib.config.samconfig import SamConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHITECTURES = ("arm64", "x86_64")


class _Loader(yaml.SafeLoader):
    """Reads CloudFormation YAML: the short-form tags (!Ref, !Sub, ...) are kept as plain values."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def template_default(name):
    with open(os.path.join(ROOT, "template.yaml")) as f:
        template = yaml.load(f, Loader=_Loader)
    return str(template["Parameters"][name].get("Default", ""))


def configured(config_env):
    """The parameter_overrides of `sam deploy` in `config_env` (global section included)."""
    config = SamConfig(ROOT)
    if not config.exists():
        return {}
    values = config.get_all(["deploy"], "parameters", env=config_env).get("parameter_overrides")
    return CfnParameterOverridesType().convert(values, None, None) if values else {}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-env", default="default")
    parser.add_argument("--arch", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    parameters = configured(args.config_env)
    if args.arch:
        parameters["Architecture"] = args.arch
    arch = parameters.get("Architecture") or template_default("Architecture")
    if arch not in ARCHITECTURES:
        print(f"error: Architecture must be arm64 or x86_64, not {arch!r}", file=sys.stderr)
        return 1
    parameters["Architecture"] = arch
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        # YAML: the one structured format `--parameter-overrides file://` reads besides TOML.
        yaml.safe_dump({k: str(v) for k, v in parameters.items()}, f, sort_keys=True)
    print(arch)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
