"""Proves that test/deploy/check_deploy.py catches broken deployment files.

Each case copies deploy/ into a temporary directory, breaks one thing with
an exact text replacement, runs the checker on the copy as a subprocess and
asserts that it exits 1 naming the problem. The pristine copy must pass.

Run: /usr/bin/python3 -m pytest -q test/deploy/test_check_deploy.py
"""

import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CHECKER = os.path.join(HERE, "check_deploy.py")


def make_copy(tmp_path):
    deploy = tmp_path / "deploy"
    shutil.copytree(os.path.join(ROOT, "deploy"), deploy)
    # The Dockerfile's COPY sources are checked relative to the repo root,
    # and the fake vendor's settings must be documented in the README.
    (tmp_path / "examples" / "fastapi").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "examples", "fastapi", "fake_vendor.py"),
                tmp_path / "examples" / "fastapi")
    return deploy


def run(deploy, *args):
    r = subprocess.run([sys.executable, CHECKER, "--deploy", str(deploy)]
                       + list(args), capture_output=True, text=True,
                       timeout=120)
    return r.returncode, r.stdout + r.stderr


def edit(path, old, new, count=1):
    text = path.read_text()
    assert text.count(old) >= 1, "mutation target %r not in %s" % (old, path)
    path.write_text(text.replace(old, new, count))


def test_pristine_copy_passes(tmp_path):
    code, out = run(make_copy(tmp_path))
    assert code == 0, out
    assert out.startswith("check-deploy: OK: ")
    assert "nginx -t accepted it" in out


# (file, old text, new text, expected words in the report)
MUTATIONS = [
    ("k8s/deployment.yaml", "path: /ready", "path: /readyz",
     "readinessProbe path is '/readyz', expected /ready"),
    ("k8s/deployment.yaml", "path: /health", "path: /healthz",
     "livenessProbe path is '/healthz', expected /health"),
    ("k8s/deployment.yaml", "--limit-concurrency=100",
     "--limit-concurrency=1000", "uvicorn --limit-concurrency must be 100"),
    ("k8s/deployment.yaml", "            - --backlog=200\n", "",
     "uvicorn --backlog must be 200"),
    ("k8s/deployment.yaml", "            - --timeout-keep-alive=5\n", "",
     "uvicorn --timeout-keep-alive must be 5"),
    ("k8s/deployment.yaml", "              port: 8000\n            initial"
     "DelaySeconds: 5", "              port: 8080\n            initial"
     "DelaySeconds: 5", "readinessProbe port 8080 is not a containerPort"),
    ("k8s/deployment.yaml", 'memory: "512Mi"', 'memory: "2Gi"',
     "resources.requests.memory exceeds resources.limits.memory"),
    ("k8s/deployment.yaml", "replicas: 3", "replicas: 4",
     "ADMIT_FALLBACK_SHARE 0.33 x 4 replicas > 1"),
    ("k8s/deployment.yaml", "key: ADMIT_BACKLOG}", "key: ADMIT_BACKLOGG}",
     "reads key 'ADMIT_BACKLOGG', missing from ConfigMap admit-api-config"),
    ("k8s/configmap.yaml", '  ADMIT_REDIS_URL: "redis://redis:6379/0"\n',
     "", "reads key 'ADMIT_REDIS_URL', missing from ConfigMap"),
    ("k8s/configmap.yaml", 'redis://redis:6379/0', 'redis://cache:6379/0',
     "ADMIT_REDIS_URL host 'cache' is not a Service defined here"),
    ("k8s/configmap.yaml", 'VENDOR_RETRIES: "3"', "VENDOR_RETRIES: 3",
     "data.VENDOR_RETRIES must be a string (quote it)"),
    ("k8s/configmap.yaml", '  VENDOR_RETRIES: "3"\n',
     '  VENDOR_RETRIES: "3"\n  VENDOR_UNUSED: "1"\n',
     "key VENDOR_UNUSED is never read by the Deployment"),
    ("k8s/configmap.yaml", 'ADMIT_FAILURE_POLICY: "local"',
     'ADMIT_FAILURE_POLICY: "sometimes"',
     "ADMIT_FAILURE_POLICY must be one of closed/open/local"),
    ("k8s/service.yaml", "    app.kubernetes.io/name: admit-api\n  ports:",
     "    app.kubernetes.io/name: admit-apx\n  ports:",
     "selector {'app.kubernetes.io/name': 'admit-apx'} matches no"),
    ("k8s/service.yaml", "targetPort: http", "targetPort: web",
     "targetPort 'web' is not a port of Deployment admit-api"),
    ("k8s/ingress.yaml", '    nginx.ingress.kubernetes.io/limit-rps: "100"\n',
     "", "annotation nginx.ingress.kubernetes.io/limit-rps must be"),
    ("k8s/ingress.yaml", 'limit-connections: "20"', "limit-connections: 20",
     "metadata.annotations[nginx.ingress.kubernetes.io/limit-connections] "
     "must be a string"),
    ("k8s/ingress.yaml", "                name: admit-api\n",
     "                name: admit-apj\n",
     "backend Service 'admit-apj' is not defined"),
    ("k8s/ingress.yaml", "path: /agent", "path: /agents",
     "no Ingress path for /agent"),
    ("k8s/redis.yaml", "            - volatile-ttl",
     "            - noeviction",
     "redis --maxmemory-policy must be one of volatile-ttl/allkeys-lru"),
    ("k8s/redis.yaml", '            - --appendonly\n            - "no"\n',
     '            - --appendonly\n            - "yes"\n',
     "redis must run without persistence"),
    ("k8s/ingress-nginx-controller.yaml", 'upstream-keepalive-timeout: "4"',
     'upstream-keepalive-timeout: "60"',
     "upstream-keepalive-timeout must be below uvicorn's"),
    ("k8s/ingress-nginx-controller.yaml", 'limit-req-status-code: "429"',
     'limit-req-status-code: "503"',
     "limit_req_status 429 differs from the ingress controller's"),
    ("k8s/kustomization.yaml", "  - redis.yaml\n", "",
     "redis.yaml must be listed in resources"),
    ("k8s/networkpolicy.yaml", "              app.kubernetes.io/name: "
     "admit-api\n", "              app.kubernetes.io/name: admit\n",
     "from.podSelector {'app.kubernetes.io/name': 'admit'} matches no"),
    ("k8s/service.yaml", "kind: Service", "kind: Servic",
     "unknown or missing kind 'Servic'"),
    ("k8s/service.yaml", "apiVersion: v1", "apiVersion: apps/v1",
     "Service needs apiVersion v1, not 'apps/v1'"),
    ("k8s/service.yaml", "  type: ClusterIP\n",
     "  type: ClusterIP\n  type: NodePort\n", "duplicate key 'type'"),
    ("k8s/service.yaml", "  ports:\n    - name: http",
     "  ports:\n   - name: http", "YAML does not parse"),
    ("docker-compose.yml", "    # No ports: only services on the internal "
     "network reach it.\n", '    ports: ["6379:6379"]\n',
     "service redis: publishes ports ['6379:6379']"),
    ("docker-compose.yml", "    expose:\n", '    ports: ["8000:8000"]\n'
     "    expose:\n", "service api: publishes ports ['8000:8000']"),
    ("docker-compose.yml", "  internal:\n    internal: true\n",
     "  internal: {}\n", "network internal must be internal: true"),
    ("docker-compose.yml", "      - --timeout-keep-alive=5\n      # nginx",
     "      - --timeout-keep-alive=15\n      # nginx",
     "uvicorn command differs from the Kubernetes Deployment's"),
    ("docker-compose.yml", "      VENDOR_RETRIES: \"3\"\n", "",
     "environment keys differ from ConfigMap admit-api-config: missing "
     "['VENDOR_RETRIES']"),
    ("docker-compose.yml", "ADMIT_REDIS_URL: redis://redis:6379/0",
     "ADMIT_REDIS_URL: redis://localhost:6379/0",
     "ADMIT_REDIS_URL host 'localhost' is not a compose service"),
    ("docker-compose.yml", "./nginx/admit.conf:", "./nginx/gateway.conf:",
     "volume source ./nginx/gateway.conf does not exist"),
    ("Dockerfile", '"--backlog=200", ', "",
     "CMD uvicorn --backlog must be 200"),
    ("nginx/admit.conf", "  keepalive 32;\n", "  keepalive 32\n",
     "nginx -t rejects it"),
    ("nginx/admit.conf", "limit_req_zone $binary_remote_addr "
     "zone=admit_req_per_ip:10m rate=100r/s;",
     "limit_req_zone $binary_remote_addr zone=admit_req_per_ip:10m "
     "rate=100r/fortnight;", "nginx -t rejects it"),
    ("nginx/admit.conf", "limit_req zone=admit_req_per_ip burst=200 nodelay;"
     "\n\n    proxy_pass", "limit_req zone=admit_req_per_ip_typo burst=200 "
     "nodelay;\n\n    proxy_pass", "nginx -t rejects it"),
    ("nginx/admit.conf", "limit_req_status 429;", "limit_req_status 503;",
     "limit_req_status 503 differs from the ingress controller's"),
    ("nginx/admit.conf", "    proxy_set_header Upgrade $http_upgrade;\n", "",
     "location /agent must pass the Upgrade header"),
    ("nginx/admit.conf", "  keepalive_timeout 4s;", "  keepalive_timeout 10s;",
     "upstream admit_api keepalive_timeout 10s must be below uvicorn's"),
    ("nginx/admit.conf", "    proxy_max_temp_file_size 0;\n", "",
     "must not spool responses to disk"),
    ("nginx/admit.conf", "server_tokens off;", "server_tokens off;\nuser "
     "www-data;", "'user' does not belong in an http-context file"),
    ("nginx/admit.conf", "  location /api/ {", "  location /v1/ {",
     "no 'location /api/'"),
    ("README.md", "`VENDOR_CONCURRENCY`", "VENDOR_CONCURRENCY",
     "setting VENDOR_CONCURRENCY is not documented"),
    ("README.md", "`VENDOR_SEED`", "VENDOR_SEED",
     "setting VENDOR_SEED is not documented"),
    ("README.md", "`Dockerfile.dockerignore`", "the ignore file",
     "file Dockerfile.dockerignore is not described"),
]


@pytest.mark.parametrize("name,old,new,expected", MUTATIONS,
                         ids=["%s:%d" % (m[0], i)
                              for i, m in enumerate(MUTATIONS)])
def test_broken_copy_is_caught(tmp_path, name, old, new, expected):
    deploy = make_copy(tmp_path)
    edit(deploy / name, old, new)
    # nginx -t matters only for the nginx file; skipping it elsewhere saves
    # time (the static nginx checks still run).
    code, out = run(deploy, *([] if name.startswith("nginx/")
                              else ["--no-nginx"]))
    assert code == 1, out
    assert out.startswith("check-deploy: FAILED"), out
    assert expected in out, out


def test_undescribed_file_is_caught(tmp_path):
    deploy = make_copy(tmp_path)
    (deploy / "k8s" / "hpa.yaml").write_text(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n"
        "metadata:\n  name: admit-api\n")
    code, out = run(deploy, "--no-nginx")
    assert code == 1
    assert "file k8s/hpa.yaml is not described" in out
    assert "hpa.yaml must be listed in resources" in out


def test_missing_files_are_caught(tmp_path):
    deploy = make_copy(tmp_path)
    os.remove(deploy / "nginx" / "admit.conf")
    os.remove(deploy / "docker-compose.yml")
    code, out = run(deploy)
    assert code == 1
    assert "deploy/nginx/admit.conf: missing" in out
    assert "deploy/docker-compose.yml: missing" in out


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    deploy = make_copy(tmp_path)
    edit(deploy / "k8s/deployment.yaml", "path: /ready", "path: /readyz")
    edit(deploy / "docker-compose.yml", "  internal:\n    internal: true\n",
         "  internal: {}\n")
    code, out = run(deploy, "--no-nginx")
    assert code == 1
    assert "FAILED, 2 problem(s)" in out, out
