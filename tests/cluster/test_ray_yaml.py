"""cluster/ray.yaml: Ray accepts it, and it agrees with the project it launches.

Everything here is offline: Ray's schema and config preparation, botocore's own EC2
request model, and plain reads of the repository's files. Nothing talks to AWS.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from argparse import Namespace
from pathlib import Path

import botocore.session
import jsonschema
import pytest
import ray
import yaml
from botocore.validate import validate_parameters
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from ray.autoscaler._private.util import prepare_config, validate_config

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster" / "ray.yaml"
DOCS = REPO / "docs" / "cluster.md"
IMAGE_TAG = re.compile(r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<major>3)(?P<minor>\d+)-gpu$")
PIN = re.compile(r'"(?P<req>[A-Za-z0-9_.\[\]-]+==[^"]+)"')

# Shapes of credentials that must never appear in the file.
SECRET_PATTERNS = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"aws_(secret_access_key|access_key_id|session_token)", re.IGNORECASE),
    re.compile(r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID|SESSION_TOKEN)"),
    re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),  # Hugging Face tokens
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"ssh_private_key"),
]


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture(scope="module")
def config(text: str) -> dict:
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def dependency(pyproject: dict, name: str) -> Requirement:
    """The project's declared requirement on `name` (e.g. torch>=2.4)."""
    for line in pyproject["project"]["dependencies"]:
        req = Requirement(line)
        if req.name == name:
            return req
    raise AssertionError(f"pyproject.toml declares no dependency on {name}")


def setup_pins(config: dict) -> dict[str, Requirement]:
    """Exact pins (`pkg==x.y.z`) installed by the setup commands, by package name."""
    reqs = [Requirement(m["req"]) for cmd in config["setup_commands"] for m in PIN.finditer(cmd)]
    return {req.name: req for req in reqs}


def image_versions(config: dict) -> tuple[str, str]:
    """(ray version, python version) encoded in the docker image tag."""
    match = IMAGE_TAG.match(config["docker"]["image"])
    assert match, f"image {config['docker']['image']!r} is not a rayproject/ray:<ver>-py3XX-gpu tag"
    return match["ray"], f"{match['major']}.{match['minor']}"


def gpu_node_types(config: dict) -> dict[str, dict]:
    return {n: t for n, t in config["available_node_types"].items() if t["resources"].get("GPU", 0) > 0}


def docs_learn_args() -> Namespace:
    """The learning job submitted in docs/cluster.md, parsed by the job's own parser."""
    from pipelines.learn_masks import build_parser

    script = "python pipelines/learn_masks.py"
    lines = [ln for ln in DOCS.read_text().replace("\\\n", " ").splitlines() if script in ln]
    assert lines, f"docs/cluster.md shows no `{script}` command"
    return build_parser().parse(shlex.split(lines[0].split(script, 1)[1]))


def learn_defaults() -> Namespace:
    from pipelines.learn_masks import build_parser

    return build_parser().parse(["--model", "any"])


def test_validates_against_the_schema_shipped_with_ray(config):
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema_path.read_text()))


def test_passes_rays_own_preparation_and_checks(config):
    """What `ray up` does before touching AWS: merge defaults, then Ray's validation."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["available_node_types"][config["head_node_type"]]["max_workers"] == 0


def test_node_configs_are_valid_ec2_run_instances_requests(config):
    """Ray passes node_config to EC2 RunInstances; botocore's model rejects typos in it."""
    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    for node_type in config["available_node_types"].values():
        validate_parameters({**node_type["node_config"], "MinCount": 1, "MaxCount": 1}, shape)


def test_head_node_offers_nothing_to_schedule_training_on(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0


def test_gpu_workers_autoscale_from_zero_within_the_global_cap(config):
    gpu_types = gpu_node_types(config)
    assert gpu_types, "no node type declares GPUs"
    for node_type in gpu_types.values():
        assert node_type["min_workers"] == 0
        assert 0 < node_type["max_workers"] <= config["max_workers"]


def test_every_node_sets_its_ami_and_an_instance_profile(config):
    """No node falls back to Ray's built-in AMI (Ubuntu 18.04) or runs without S3 access."""
    for name, node_type in config["available_node_types"].items():
        node_config = node_type["node_config"]
        assert node_config.get("ImageId", "").lower() not in ("", "latest_dlami"), name
        assert set(node_config.get("IamInstanceProfile", {})) & {"Name", "Arn"}, name


def test_nodes_leave_no_disks_behind(config):
    """Terminated (not stopped) nodes whose volumes go with them: nothing bills after `ray down`."""
    assert config["provider"]["cache_stopped_nodes"] is False
    for name, node_type in config["available_node_types"].items():
        for mapping in node_type["node_config"].get("BlockDeviceMappings", []):
            assert mapping["Ebs"]["DeleteOnTermination"] is True, name


def test_file_holds_no_credentials(text, config):
    hits = [p.pattern for p in SECRET_PATTERNS if p.search(text)]
    assert not hits, f"cluster/ray.yaml matches credential patterns {hits}; use instance profiles"
    assert "aws_credentials" not in config["provider"]


def test_credential_patterns_catch_a_planted_key():
    """Guards the test above against vacuous patterns (AWS's documented example key id)."""
    planted = "aws_access_key_id: AKIA" + "IOSFODNN7EXAMPLE"
    assert sum(bool(p.search(planted)) for p in SECRET_PATTERNS) == 2


def test_image_ray_version_matches_installed_ray_and_pyproject(config, pyproject):
    """The launcher's Ray and the cluster's Ray must be the same release."""
    ray_version, _ = image_versions(config)
    assert ray_version == ray.__version__
    assert dependency(pyproject, "ray").specifier.contains(ray_version)
    assert setup_pins(config)["ray"].specifier == SpecifierSet(f"=={ray_version}")


def test_image_python_satisfies_requires_python(config, pyproject):
    _, python = image_versions(config)
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains(python)


def test_torch_pin_satisfies_pyproject(config, pyproject):
    torch_pin = setup_pins(config)["torch"]
    (pinned,) = [s.version for s in torch_pin.specifier]
    assert dependency(pyproject, "torch").specifier.contains(pinned)


def test_setup_installs_this_repository_mounted_from_its_root(config):
    """`ray up` runs from the repo root; the mounted directory must be this project."""
    ((remote, local),) = config["file_mounts"].items()
    mounted = (REPO / local).resolve()
    assert tomllib.loads((mounted / "pyproject.toml").read_text())["project"]["name"] == "leank"
    assert any(f"-e {remote}" in cmd for cmd in config["setup_commands"])


def test_registry_default_points_at_s3(config):
    envs = dict(
        opt.removeprefix("--env ").split("=", 1) for opt in config["docker"]["run_options"] if opt.startswith("--env ")
    )
    assert envs["LEANK_REGISTRY"].startswith("s3://")


def test_gpu_nodes_hold_whole_learn_workers_at_the_jobs_default(config):
    """learn_masks.py asks each worker for --gpus-per-worker GPUs by default; no GPU is stranded."""
    per_worker = learn_defaults().gpus_per_worker
    assert per_worker > 0, "learn_masks.py no longer trains on GPUs by default"
    for name, node_type in gpu_node_types(config).items():
        assert node_type["resources"]["GPU"] % per_worker == 0, name


def test_documented_learn_job_fits_the_cluster(config):
    """The docs' command (parsed by learn_masks.py itself) needs no more GPUs than the nodes can have."""
    args = docs_learn_args()
    capacity = sum(t["max_workers"] * t["resources"]["GPU"] for t in gpu_node_types(config).values())
    assert 0 < args.num_workers * args.gpus_per_worker <= capacity


def test_documented_learn_job_writes_checkpoints_and_mask_to_s3():
    """learn_masks.py defaults to a node-local storage path; on a cluster every node must reach it."""
    args = docs_learn_args()
    assert args.storage_path.startswith("s3://")
    assert args.registry.startswith("s3://")
