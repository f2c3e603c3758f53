"""The shipped Ray cluster-launcher files (`cluster*.yaml` at the repository root) validate offline
with Ray's own config preparation and schema validation, the same steps `ray up` takes before it
contacts the cloud (`ray.autoscaler._private.commands._bootstrap_config` calls `prepare_config`,
then the provider's bootstrap, then `validate_config`; the provider bootstrap, which talks to AWS,
is the one step left out). Plus the project's own rules: each node checks out, installs and
prepares, Ray is pinned to the project's version, the dashboard and metrics ports are open, the
default file gives 8 GPUs. No network, no Ray cluster."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import ray
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

jsonschema = pytest.importorskip("jsonschema")  # ray[default] brings it; validate_config needs it
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_FILES = sorted(ROOT.glob("cluster*.yaml"))
DEFAULT_FILE = ROOT / "cluster.yaml"
RAY_PIN = re.compile(r"""ray\[default\]==([0-9][0-9A-Za-z.+-]*)""")


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _ray_check(config: dict) -> dict:
    """What `ray up` does with the file before it reaches the provider: prepare, then validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _ids(paths):
    return [p.name for p in paths]


def test_the_cluster_files_are_shipped():
    names = {p.name for p in CLUSTER_FILES}
    assert {"cluster.yaml", "cluster-onprem.yaml"} <= names


@pytest.fixture(params=CLUSTER_FILES, ids=_ids(CLUSTER_FILES))
def cluster_file(request) -> Path:
    return request.param


def test_ray_prepares_and_validates_the_file(cluster_file):
    prepared = _ray_check(_load(cluster_file))
    assert prepared["head_node_type"] in prepared["available_node_types"]
    # prepare_config merged the common setup commands into head and worker setup.
    assert prepared["head_setup_commands"][: len(prepared["setup_commands"])] == prepared["setup_commands"]
    assert prepared["worker_setup_commands"][: len(prepared["setup_commands"])] == prepared["setup_commands"]


def test_setup_checks_out_a_pinned_commit_installs_and_prepares(cluster_file):
    setup = _load(cluster_file)["setup_commands"]
    joined = "\n".join(setup)
    assert "git clone" in joined
    assert re.search(r"git -C \S+ checkout .*\S", joined), "a pinned checkout"
    assert re.search(r"PIN=\S+", joined) and re.search(r"REPO_URL=\S+", joined)
    torch_at = next(i for i, c in enumerate(setup) if "pip install torch" in c)
    project_at = next(i for i, c in enumerate(setup) if re.search(r"pip install .*-e ", c))
    prepare_at = next(i for i, c in enumerate(setup) if "autoresearch prepare" in c)
    clone_at = next(i for i, c in enumerate(setup) if "git clone" in c)
    assert clone_at < torch_at < project_at < prepare_at


def test_ray_is_pinned_to_the_installed_version_within_the_projects_range(cluster_file):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    ray_req = next(r for r in reqs if r.name == "ray")
    pins = RAY_PIN.findall(cluster_file.read_text())
    assert pins, "setup_commands must pin ray[default]==X"
    assert set(pins) == {ray.__version__}, f"pinned {pins}, installed {ray.__version__}"
    assert Version(ray.__version__) in ray_req.specifier
    assert "default" in ray_req.extras


def test_start_commands_open_the_dashboard_and_the_metrics_port(cluster_file):
    config = _load(cluster_file)
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert re.search(r"ray start --head\b", head)
    assert re.search(r"--dashboard-host[= ]0\.0\.0\.0\b", head)
    assert re.search(r"--autoscaling-config[= ]~/ray_bootstrap_config\.yaml", head)
    for commands in (head, workers):
        assert re.search(r"--metrics-export-port[= ]8080\b", commands)
    assert re.search(r"ray start --address[= ]\$RAY_HEAD_IP:6379", workers)


def test_every_file_sets_up_and_starts_nodes_the_same_way():
    keys = ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    first = _load(CLUSTER_FILES[0])
    for path in CLUSTER_FILES[1:]:
        other = _load(path)
        for key in keys:
            assert other[key] == first[key], f"{path.name}: {key} differs from {CLUSTER_FILES[0].name}"


def _total_gpus(config: dict) -> int:
    """GPUs the cluster has when started: the head's plus min_workers of every worker type."""
    types = config["available_node_types"]
    total = 0
    for name, node_type in types.items():
        count = 1 if name == config["head_node_type"] else node_type.get("min_workers", 0)
        total += count * node_type["resources"].get("GPU", 0)
    return total


def test_the_default_file_is_one_8_gpu_aws_node():
    config = _load(DEFAULT_FILE)
    assert config["provider"]["type"] == "aws"
    assert "max_workers" in config
    for node_type in config["available_node_types"].values():
        assert {"CPU", "GPU"} <= set(node_type["resources"])   # explicit: no AWS lookup needed
    assert _total_gpus(config) == 8
    assert _total_gpus(_ray_check(config)) == 8
    head = config["available_node_types"][config["head_node_type"]]
    assert head["node_config"]["InstanceType"] == "p5.48xlarge"


def _uncomment_worker_type(text: str) -> str:
    """The commented-out scale-out node type, uncommented, with max_workers raised to match."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^\s*# ray\.worker\.\S+:\s*$", line))
    indent = re.match(r"^(\s*)#", lines[start]).group(1)
    out = lines[:start]
    i = start
    while i < len(lines) and lines[i].startswith(indent + "# "):
        out.append(indent + lines[i][len(indent) + 2:])
        i += 1
    out += lines[i:]
    text = "\n".join(out)
    return re.sub(r"(?m)^max_workers: 0$", "max_workers: 1", text)


def test_the_commented_scale_out_worker_type_validates_when_uncommented():
    config = yaml.safe_load(_uncomment_worker_type(DEFAULT_FILE.read_text()))
    assert len(config["available_node_types"]) == 2
    prepared = _ray_check(config)
    assert _total_gpus(prepared) == 16


@pytest.mark.parametrize("old,new", [("max_workers", "max_wrokers"), ("setup_commands", "setup_comands"),
                                     ("head_start_ray_commands", "head_start_ray_command")])
def test_a_misspelled_top_level_key_fails_validation(cluster_file, old, new):
    config = _load(cluster_file)
    if old not in config:
        config[old] = 0 if old == "max_workers" else []
    config[new] = config.pop(old)
    with pytest.raises(jsonschema.ValidationError):
        _ray_check(config)


def test_a_misspelled_auth_key_fails_validation(cluster_file):
    config = _load(cluster_file)
    config["auth"]["ssh_usr"] = config["auth"].pop("ssh_user")
    with pytest.raises(jsonschema.ValidationError):
        _ray_check(config)


def test_a_misspelled_node_type_key_fails_validation():
    config = _load(DEFAULT_FILE)
    head = config["available_node_types"][config["head_node_type"]]
    head["resorces"] = head.pop("resources")
    with pytest.raises(jsonschema.ValidationError):
        _ray_check(config)


def test_a_gpu_count_that_is_not_an_integer_fails_validation():
    config = _load(DEFAULT_FILE)
    config["available_node_types"][config["head_node_type"]]["resources"]["GPU"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        _ray_check(config)


def test_the_local_provider_file_follows_its_rules():
    """Ray's local provider takes machines from head_ip/worker_ips and refuses node types."""
    config = _load(ROOT / "cluster-onprem.yaml")
    assert config["provider"]["type"] == "local"
    assert "available_node_types" not in config and "head_node_type" not in config
    assert {"ssh_user", "ssh_private_key"} <= set(config["auth"])
    prepared = _ray_check(config)
    (only_type,) = prepared["available_node_types"].values()
    n = len(config["provider"]["worker_ips"])
    assert only_type["min_workers"] == only_type["max_workers"] == prepared["max_workers"] == n

    import click

    with_types = copy.deepcopy(config)
    with_types["available_node_types"] = copy.deepcopy(_load(DEFAULT_FILE)["available_node_types"])
    with pytest.raises(click.ClickException):
        _ray_check(with_types)
    no_head = copy.deepcopy(config)
    del no_head["provider"]["head_ip"]
    with pytest.raises(click.ClickException):
        _ray_check(no_head)
