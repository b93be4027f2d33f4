#!/usr/bin/python3
"""Validate the deployment files in deploy/ (`make check-deploy`).

Parses every YAML file (PyYAML, Debian's python3-yaml; duplicate keys are
errors), checks the fields each object needs and the references between
files (ConfigMap keys the Deployment reads, Service selectors, Ingress
backends, compose networks and ports, uvicorn flags repeated in three
places, status codes shared by nginx and the ingress controller), then runs
Debian's `nginx -t` on deploy/nginx/admit.conf wrapped in a generated
top-level config whose every path lies in a temporary directory, so the
test needs no privileges. For that test only, `listen` addresses move to a
free loopback port and upstream host names that do not resolve here (the
compose service names) become 127.0.0.1; nothing else is changed.

Every problem is reported (file: object: what is wrong) and the exit status
is 1; on success it prints one summary line and exits 0.

Usage: check_deploy.py [--deploy DIR] [--no-nginx]
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse

try:
    import yaml
except ImportError:  # pragma: no cover - reported as a failure
    yaml = None

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

API_VERSIONS = {
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "Ingress": "networking.k8s.io/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
}
APP = "admit-api"                     # Deployment, Service of the service
APP_CONFIG = "admit-api-config"       # its ConfigMap
REDIS = "redis"                       # Deployment, Service, compose service
CONTROLLER_CONFIG = "ingress-nginx-controller"
# uvicorn flags the seed's pods need (002 sections 4 and 10).
UVICORN_FLAGS = {"host": "0.0.0.0", "port": "8000",
                 "limit-concurrency": "100", "backlog": "200",
                 "timeout-keep-alive": "5"}
PROBES = {"livenessProbe": "/health", "readinessProbe": "/ready"}
INGRESS_LIMITS = ("limit-rps", "limit-connections", "limit-rpm")
ANNOTATION = "nginx.ingress.kubernetes.io/"
REDIS_POLICIES = ("volatile-ttl", "allkeys-lru")
PUBLISHED_OK = {"gateway"}            # compose services allowed to publish
FAKE_VENDOR = os.path.join("examples", "fastapi", "fake_vendor.py")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RATE = re.compile(r"^\d+\s*(/|\s+per\s+)\s*\d*\s*"
                  r"(second|minute|hour|day|s|m|h|d)s?$", re.I)


# --- YAML with duplicate keys refused --------------------------------------

if yaml is not None:
    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate mapping keys."""

    def _mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, "duplicate key %r" % (key,),
                    key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


# --- small helpers -----------------------------------------------------------

def quantity(text, binary_units=True):
    """Parse a Kubernetes CPU or memory quantity (or Redis's 200mb)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m:
        raise ValueError("bad quantity %r" % (text,))
    number, unit = float(m.group(1)), m.group(2)
    units = {"": 1, "m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "kb": 2**10, "mb": 2**20, "gb": 2**30}
    if unit.lower() in ("kb", "mb", "gb"):
        unit = unit.lower()
    if unit not in units:
        raise ValueError("bad unit in %r" % (text,))
    return number * units[unit]


def uvicorn_flags(argv):
    """Return (flags dict, app) from a uvicorn command line, or None."""
    argv = [str(a) for a in argv or []]
    if argv[:1] == ["uvicorn"]:
        rest = argv[1:]
    elif len(argv) >= 3 and argv[1:3] == ["-m", "uvicorn"] \
            and os.path.basename(argv[0]).startswith("python"):
        rest = argv[3:]
    else:
        return None
    flags, app, i = {}, None, 0
    while i < len(rest):
        a = rest[i]
        if a.startswith("--"):
            if "=" in a:
                name, value = a[2:].split("=", 1)
            elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                name, value = a[2:], rest[i + 1]
                i += 1
            else:
                name, value = a[2:], ""
            flags[name] = value
        elif app is None:
            app = a
        i += 1
    return flags, app


def labels_match(selector, labels):
    return bool(selector) and all(
        (labels or {}).get(k) == v for k, v in selector.items())


# --- nginx configuration parsing ---------------------------------------------

def nginx_parse(text):
    """Parse nginx config text into [(name, args, children or None)]."""
    tokens = re.findall(r"#[^\n]*|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
                        r"|[{};]|[^\s{};'\"#]+", text)
    root, stack, words = [], [], []
    current = root
    for t in tokens:
        if t.startswith("#"):
            continue
        if t == ";":
            if not words:
                raise ValueError("empty directive")
            current.append((words[0], words[1:], None))
            words = []
        elif t == "{":
            if not words:
                raise ValueError("block without a name")
            node = (words[0], words[1:], [])
            current.append(node)
            stack.append(current)
            current, words = node[2], []
        elif t == "}":
            if words or not stack:
                raise ValueError("unbalanced '}'")
            current = stack.pop()
        else:
            words.append(t.strip("'\"") if t[0] in "'\"" else t)
    if stack or words:
        raise ValueError("unterminated block or directive")
    return root


def nginx_find(nodes, name, args=None):
    return [n for n in nodes if n[0] == name
            and (args is None or n[1] == args)]


def nginx_value(nodes, name):
    found = nginx_find(nodes, name)
    return found[-1][1] if found else None


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", text)
    if not m:
        raise ValueError("bad time %r" % text)
    return int(m.group(1)) * {"ms": 1e-3, "s": 1, None: 1, "m": 60,
                              "h": 3600}[m.group(2)]


# --- the checker -------------------------------------------------------------

class Checker:
    def __init__(self, deploy_dir, run_nginx=True):
        self.dir = os.path.abspath(deploy_dir)
        self.root = os.path.dirname(self.dir)
        self.run_nginx = run_nginx
        self.errors = []
        self.checks = 0
        self.files = 0
        self.objects = {}      # (kind, name) -> (file, doc)
        self.compose = None
        self.nginx = None
        self.nginx_text = None

    # reporting
    def rel(self, path):
        return os.path.relpath(path, self.root)

    def expect(self, ok, where, message):
        self.checks += 1
        if not ok:
            self.errors.append("%s: %s" % (where, message))
        return ok

    def fail(self, where, message):
        self.expect(False, where, message)

    # loading
    def load_yaml(self, path):
        self.files += 1
        try:
            with open(path) as f:
                docs = [d for d in yaml.load_all(f, Loader=StrictLoader)
                        if d is not None]
        except yaml.YAMLError as e:
            self.fail(self.rel(path), "YAML does not parse: %s"
                      % str(e).replace("\n", " "))
            return []
        if not docs:
            self.fail(self.rel(path), "no YAML document")
        return docs

    def run(self):
        if yaml is None:
            self.fail("check_deploy.py", "python3-yaml is missing: run "
                      "`make deps` (Debian package python3-yaml)")
            return False
        if not self.expect(os.path.isdir(self.dir), self.dir,
                           "deploy directory missing"):
            return False
        k8s_dir = os.path.join(self.dir, "k8s")
        for name in sorted(os.listdir(k8s_dir)):
            if name.endswith((".yaml", ".yml")):
                self.load_k8s(os.path.join(k8s_dir, name))
        self.check_k8s()
        self.check_compose()
        self.check_dockerfile()
        self.check_nginx_static()
        self.check_cross()
        self.check_readme()
        if self.run_nginx:
            self.check_nginx_t()
        return not self.errors

    # --- Kubernetes ------------------------------------------------------

    def load_k8s(self, path):
        for i, doc in enumerate(self.load_yaml(path)):
            where = "%s[%d]" % (self.rel(path), i)
            if not self.expect(isinstance(doc, dict), where,
                               "document is not a mapping"):
                continue
            kind = doc.get("kind")
            meta = doc.get("metadata") or {}
            name = meta.get("name")
            self.expect(kind in API_VERSIONS, where,
                        "unknown or missing kind %r" % (kind,))
            if kind in API_VERSIONS:
                self.expect(doc.get("apiVersion") == API_VERSIONS[kind], where,
                            "%s needs apiVersion %s, not %r"
                            % (kind, API_VERSIONS[kind],
                               doc.get("apiVersion")))
            if kind == "Kustomization":
                self.objects[(kind, os.path.basename(path))] = (path, doc)
                continue
            if not self.expect(isinstance(name, str) and DNS_LABEL.match(name)
                               and len(name) <= 63, where,
                               "metadata.name %r is not a DNS label" % name):
                continue
            key = (kind, name)
            self.expect(key not in self.objects, where,
                        "%s %s defined twice" % key)
            self.objects[key] = (path, doc)
            for field in ("labels", "annotations"):
                for k, v in (meta.get(field) or {}).items():
                    self.expect(isinstance(v, str), where,
                                "metadata.%s[%s] must be a string (quote it)"
                                % (field, k))

    def obj(self, kind, name):
        found = self.objects.get((kind, name))
        if found is None:
            self.fail("deploy/k8s", "no %s named %s" % (kind, name))
            return None, None
        return found

    def kind(self, kind):
        return [(k[1], v[0], v[1]) for k, v in self.objects.items()
                if k[0] == kind]

    def where(self, path, kind, name):
        return "%s: %s %s" % (self.rel(path), kind, name)

    def check_k8s(self):
        for name, path, doc in self.kind("Deployment"):
            self.check_deployment(name, path, doc)
        for name, path, doc in self.kind("ConfigMap"):
            w = self.where(path, "ConfigMap", name)
            data = doc.get("data")
            if self.expect(isinstance(data, dict) and data, w,
                           "data is missing or empty"):
                for k, v in data.items():
                    self.expect(isinstance(v, str), w, "data.%s must be a "
                                "string (quote it), not %r" % (k, v))
        for name, path, doc in self.kind("Service"):
            self.check_service(name, path, doc)
        for name, path, doc in self.kind("Ingress"):
            self.check_ingress(name, path, doc)
        for name, path, doc in self.kind("NetworkPolicy"):
            self.check_netpol(name, path, doc)
        for name, path, doc in self.kind("Kustomization"):
            self.check_kustomization(path, doc)
        self.check_app()
        self.check_app_config()
        self.check_redis()
        self.check_controller()

    def pod_labels(self):
        return [(name, ((doc.get("spec") or {}).get("template") or {})
                 .get("metadata", {}).get("labels") or {}, doc)
                for name, _, doc in self.kind("Deployment")]

    def check_deployment(self, name, path, doc):
        w = self.where(path, "Deployment", name)
        spec = doc.get("spec") or {}
        replicas = spec.get("replicas")
        self.expect(isinstance(replicas, int) and replicas >= 1, w,
                    "spec.replicas must be an integer >= 1, not %r"
                    % (replicas,))
        selector = (spec.get("selector") or {}).get("matchLabels")
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels")
        self.expect(labels_match(selector, labels), w,
                    "spec.selector.matchLabels %r does not match the pod "
                    "template labels %r" % (selector, labels))
        containers = (template.get("spec") or {}).get("containers")
        if not self.expect(isinstance(containers, list) and containers, w,
                           "spec.template.spec.containers is empty"):
            return
        for c in containers:
            cw = "%s: container %s" % (w, c.get("name"))
            self.expect(bool(c.get("name")) and bool(c.get("image")), cw,
                        "container needs a name and an image")
            self.check_resources(cw, c.get("resources") or {})
            ports = {}
            for p in c.get("ports") or []:
                ports[p.get("containerPort")] = p
                if p.get("name"):
                    ports[p["name"]] = p
            for probe in ("livenessProbe", "readinessProbe"):
                http = (c.get(probe) or {}).get("httpGet")
                if http:
                    self.expect(http.get("port") in ports, cw,
                                "%s port %r is not a containerPort"
                                % (probe, http.get("port")))
            self.check_env(cw, c)

    def check_resources(self, where, res):
        for part in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if not self.expect(what in (res.get(part) or {}), where,
                                   "resources.%s.%s is missing"
                                   % (part, what)):
                    return
        for what in ("cpu", "memory"):
            try:
                req = quantity(res["requests"][what])
                lim = quantity(res["limits"][what])
            except ValueError as e:
                self.fail(where, "resources: %s" % e)
                continue
            self.expect(req <= lim, where, "resources.requests.%s exceeds "
                        "resources.limits.%s" % (what, what))

    def check_env(self, where, c):
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            sref = (e.get("valueFrom") or {}).get("secretKeyRef")
            self.expect("value" in e or ref or sref
                        or (e.get("valueFrom") or {}), where,
                        "env %s has no value" % e.get("name"))
            if "value" in e:
                self.expect(isinstance(e["value"], str), where, "env %s value "
                            "must be a string (quote it)" % e.get("name"))
            if ref and not ref.get("optional"):
                found = self.objects.get(("ConfigMap", ref.get("name")))
                if self.expect(found is not None, where,
                               "env %s reads ConfigMap %r, which is not "
                               "defined" % (e.get("name"), ref.get("name"))):
                    data = found[1].get("data") or {}
                    self.expect(ref.get("key") in data, where,
                                "env %s reads key %r, missing from "
                                "ConfigMap %s" % (e.get("name"),
                                                  ref.get("key"),
                                                  ref.get("name")))
            if sref and not sref.get("optional"):
                self.expect(("Secret", sref.get("name")) in self.objects,
                            where, "env %s reads Secret %r, which is not "
                            "defined and not optional"
                            % (e.get("name"), sref.get("name")))
        for ef in c.get("envFrom") or []:
            ref = ef.get("configMapRef")
            if ref and not ref.get("optional"):
                self.expect(("ConfigMap", ref.get("name")) in self.objects,
                            where, "envFrom reads ConfigMap %r, which is not "
                            "defined" % ref.get("name"))

    def app_container(self):
        path, doc = self.obj("Deployment", APP)
        if doc is None:
            return None, None, None
        containers = ((doc.get("spec") or {}).get("template") or {}) \
            .get("spec", {}).get("containers") or [{}]
        return path, doc, containers[0]

    def app_uvicorn(self):
        path, doc, c = self.app_container()
        if c is None:
            return None
        return uvicorn_flags(list(c.get("command") or [])
                             + list(c.get("args") or []))

    def check_app(self):
        path, doc, c = self.app_container()
        if c is None:
            return
        w = self.where(path, "Deployment", APP)
        parsed = self.app_uvicorn()
        if not self.expect(parsed is not None, w, "command must run uvicorn "
                           "(uvicorn ... or python3 -m uvicorn ...), got %r"
                           % (c.get("command"),)):
            return
        flags, app = parsed
        self.expect(bool(app) and ":" in app, w,
                    "uvicorn needs an app argument module:attribute")
        for flag, value in UVICORN_FLAGS.items():
            self.expect(flags.get(flag) == value, w,
                        "uvicorn --%s must be %s (seed 002), got %r"
                        % (flag, value, flags.get(flag)))
        port = flags.get("port")
        ports = [p.get("containerPort") for p in c.get("ports") or []]
        self.expect(str(port) in [str(p) for p in ports], w,
                    "uvicorn --port %s is not a containerPort %r"
                    % (port, ports))
        for probe, expected in PROBES.items():
            http = (c.get(probe) or {}).get("httpGet")
            if not self.expect(http is not None, w, "%s with httpGet is "
                               "missing" % probe):
                continue
            self.expect(http.get("path") == expected, w,
                        "%s path is %r, expected %s"
                        % (probe, http.get("path"), expected))
            named = {p.get("name"): p.get("containerPort")
                     for p in c.get("ports") or []}
            probe_port = named.get(http.get("port"), http.get("port"))
            self.expect(str(probe_port) == str(port), w,
                        "%s port %r is not uvicorn's --port %s"
                        % (probe, http.get("port"), port))
            for field in ("periodSeconds", "failureThreshold"):
                v = (c.get(probe) or {}).get(field)
                self.expect(isinstance(v, int) and v > 0, w,
                            "%s.%s must be a positive integer"
                            % (probe, field))
        env = {e.get("name"): e for e in c.get("env") or []}
        redis_env = env.get("ADMIT_REDIS_URL") or {}
        ref = (redis_env.get("valueFrom") or {}).get("configMapKeyRef") or {}
        self.expect(ref.get("name") == APP_CONFIG
                    and ref.get("key") == "ADMIT_REDIS_URL", w,
                    "env ADMIT_REDIS_URL must come from ConfigMap %s key "
                    "ADMIT_REDIS_URL" % APP_CONFIG)
        _, cm = self.objects.get(("ConfigMap", APP_CONFIG), (None, None))
        if cm:
            read = {((e.get("valueFrom") or {}).get("configMapKeyRef")
                     or {}).get("key") for e in env.values()}
            for key in cm.get("data") or {}:
                self.expect(key in read, w, "ConfigMap %s key %s is never "
                            "read by the Deployment" % (APP_CONFIG, key))

    def check_app_config(self):
        path, cm = self.obj("ConfigMap", APP_CONFIG)
        if cm is None:
            return
        w = self.where(path, "ConfigMap", APP_CONFIG)
        data = cm.get("data") or {}
        self.check_settings(w, data, "Service", self.k8s_service_port)
        _, dep = self.objects.get(("Deployment", APP), (None, None))
        if dep:
            self.check_share(w, data, dep.get("spec", {}).get("replicas"))
        flags = (self.app_uvicorn() or ({}, None))[0]
        if str(data.get("ADMIT_MAX_IN_FLIGHT", "")).isdigit() \
                and str(flags.get("limit-concurrency", "")).isdigit():
            self.expect(int(data["ADMIT_MAX_IN_FLIGHT"])
                        < int(flags["limit-concurrency"]), w,
                        "ADMIT_MAX_IN_FLIGHT must stay below uvicorn's "
                        "--limit-concurrency so the app answers 503 first")

    def k8s_service_port(self, host):
        found = self.objects.get(("Service", host))
        if not found:
            return None
        return [p.get("port") for p in found[1].get("spec", {})
                .get("ports") or []]

    def check_settings(self, w, data, what, ports_of):
        """Checks shared by the ConfigMap and the compose environment."""
        url = data.get("ADMIT_REDIS_URL")
        if self.expect(isinstance(url, str), w,
                       "ADMIT_REDIS_URL is missing"):
            u = urllib.parse.urlsplit(url)
            self.expect(u.scheme in ("redis", "rediss") and u.hostname, w,
                        "ADMIT_REDIS_URL %r is not redis://host:port/db"
                        % url)
            self.expect(re.fullmatch(r"/\d+", u.path or "") is not None, w,
                        "ADMIT_REDIS_URL %r names no database (/0)" % url)
            ports = ports_of(u.hostname)
            if self.expect(ports is not None, w,
                           "ADMIT_REDIS_URL host %r is not a %s defined here"
                           % (u.hostname, what)):
                self.expect((u.port or 6379) in ports, w,
                            "ADMIT_REDIS_URL port %s is not a port of %s %s "
                            "%r" % (u.port or 6379, what, u.hostname, ports))
        vendor = data.get("VENDOR_URL")
        self.expect(isinstance(vendor, str) and urllib.parse.urlsplit(
            vendor).scheme in ("http", "https"), w,
            "VENDOR_URL must be an http(s) URL, got %r" % (vendor,))
        self.expect(RATE.match(str(data.get("VENDOR_RATE_LIMIT", ""))), w,
                    "VENDOR_RATE_LIMIT must look like 500/minute, got %r"
                    % (data.get("VENDOR_RATE_LIMIT"),))
        choices = {"ADMIT_BACKEND": ("redis", "local"),
                   "ADMIT_FAILURE_POLICY": ("closed", "open", "local")}
        for key, allowed in choices.items():
            self.expect(data.get(key) in allowed, w, "%s must be one of %s, "
                        "got %r" % (key, "/".join(allowed), data.get(key)))
        numbers = {"ADMIT_MAX_IN_FLIGHT": (int, 1),
                   "ADMIT_BACKLOG": (int, 0),
                   "ADMIT_AGENT_MAX_SESSIONS": (int, 1),
                   "ADMIT_AGENT_MAX_SESSIONS_PER_USER": (int, 1),
                   "VENDOR_CONCURRENCY": (int, 1),
                   "VENDOR_QUEUE_TIMEOUT_S": (float, 1e-9),
                   "VENDOR_CALL_TIMEOUT_S": (float, 1e-9),
                   "VENDOR_RETRIES": (int, 0),
                   "ADMIT_FALLBACK_SHARE": (float, 1e-9)}
        for key, (kind, low) in numbers.items():
            try:
                ok = kind(str(data.get(key))) >= low
            except ValueError:
                ok = False
            self.expect(ok, w, "%s must be a %s >= %g, got %r"
                        % (key, kind.__name__, low, data.get(key)))

    def check_share(self, w, data, replicas):
        if data.get("ADMIT_FAILURE_POLICY") != "local":
            return
        try:
            share = float(data.get("ADMIT_FALLBACK_SHARE"))
        except (TypeError, ValueError):
            return  # reported by check_settings
        self.expect(share * (replicas or 1) <= 1.0 + 1e-9, w,
                    "ADMIT_FALLBACK_SHARE %g x %d replicas > 1: during a "
                    "Redis outage the pods together would exceed the vendor "
                    "quota" % (share, replicas or 1))

    def check_service(self, name, path, doc):
        w = self.where(path, "Service", name)
        spec = doc.get("spec") or {}
        selector = spec.get("selector")
        pods = [(dname, d) for dname, labels, d in self.pod_labels()
                if labels_match(selector, labels)]
        if not self.expect(pods, w, "selector %r matches no Deployment's pod "
                           "labels" % (selector,)):
            return
        containers = pods[0][1]["spec"]["template"]["spec"]["containers"]
        cports = set()
        for c in containers:
            for p in c.get("ports") or []:
                cports.add(p.get("containerPort"))
                cports.add(p.get("name"))
        ports = spec.get("ports")
        if not self.expect(isinstance(ports, list) and ports, w,
                           "spec.ports is empty"):
            return
        for p in ports:
            self.expect(isinstance(p.get("port"), int), w,
                        "port must be an integer, got %r" % (p.get("port"),))
            target = p.get("targetPort", p.get("port"))
            self.expect(target in cports, w, "targetPort %r is not a port "
                        "of Deployment %s" % (target, pods[0][0]))

    def check_ingress(self, name, path, doc):
        w = self.where(path, "Ingress", name)
        spec = doc.get("spec") or {}
        meta = doc.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        self.expect(spec.get("ingressClassName") == "nginx"
                    or annotations.get("kubernetes.io/ingress.class")
                    == "nginx", w, "ingressClassName must be nginx")
        for limit in INGRESS_LIMITS:
            value = annotations.get(ANNOTATION + limit)
            self.expect(isinstance(value, str) and value.isdigit()
                        and int(value) > 0, w,
                        "annotation %s%s must be a positive integer string "
                        "(gateway layer, seed 002 section 2), got %r"
                        % (ANNOTATION, limit, value))
        for tls in spec.get("tls") or []:
            self.expect(bool(tls.get("secretName")), w,
                        "tls entry without secretName")
        rules = spec.get("rules")
        if not self.expect(isinstance(rules, list) and rules, w,
                           "spec.rules is empty"):
            return
        for rule in rules:
            for p in (rule.get("http") or {}).get("paths") or []:
                self.expect(p.get("pathType") in ("Exact", "Prefix",
                                                  "ImplementationSpecific"),
                            w, "path %r needs a pathType" % p.get("path"))
                backend = (p.get("backend") or {}).get("service") or {}
                sname = backend.get("name")
                found = self.objects.get(("Service", sname))
                if not self.expect(found is not None, w,
                                   "backend Service %r is not defined"
                                   % sname):
                    continue
                port = backend.get("port") or {}
                sports = found[1].get("spec", {}).get("ports") or []
                self.expect(port.get("number") in [s.get("port")
                                                   for s in sports]
                            or port.get("name") in [s.get("name")
                                                    for s in sports], w,
                            "backend port %r is not a port of Service %s"
                            % (port, sname))

    def ingress_paths(self):
        paths = []
        for _, _, doc in self.kind("Ingress"):
            for rule in (doc.get("spec") or {}).get("rules") or []:
                for p in (rule.get("http") or {}).get("paths") or []:
                    paths.append(str(p.get("path")))
        return paths

    def check_netpol(self, name, path, doc):
        w = self.where(path, "NetworkPolicy", name)
        spec = doc.get("spec") or {}
        selector = (spec.get("podSelector") or {}).get("matchLabels")
        self.expect(any(labels_match(selector, labels)
                        for _, labels, _ in self.pod_labels()), w,
                    "podSelector %r matches no Deployment" % (selector,))
        for rule in spec.get("ingress") or []:
            for peer in rule.get("from") or []:
                sel = (peer.get("podSelector") or {}).get("matchLabels")
                if sel is not None:
                    self.expect(any(labels_match(sel, labels)
                                    for _, labels, _ in self.pod_labels()),
                                w, "from.podSelector %r matches no "
                                "Deployment" % (sel,))

    def check_kustomization(self, path, doc):
        w = self.rel(path)
        resources = doc.get("resources") or []
        here = os.path.dirname(path)
        for r in resources:
            self.expect(os.path.isfile(os.path.join(here, r)), w,
                        "resource %s does not exist" % r)
        for name in sorted(os.listdir(here)):
            if name.endswith((".yaml", ".yml")) and name != \
                    os.path.basename(path):
                controller = name.startswith(CONTROLLER_CONFIG)
                self.expect((name in resources) != controller, w,
                            "%s must %sbe listed in resources" % (
                                name, "not " if controller else ""))

    def check_redis(self):
        path, dep = self.obj("Deployment", REDIS)
        if dep is not None:
            w = self.where(path, "Deployment", REDIS)
            c = (dep["spec"]["template"]["spec"].get("containers") or [{}])[0]
            self.check_redis_args(w, list(c.get("command") or [])
                                  + list(c.get("args") or []),
                                  (c.get("resources") or {}).get("limits",
                                                                 {}))
        path, svc = self.obj("Service", REDIS)
        if svc is not None:
            self.expect(6379 in [p.get("port") for p in
                                 svc["spec"].get("ports") or []],
                        self.where(path, "Service", REDIS),
                        "Redis Service must expose port 6379")
        self.expect(any(labels_match(
            (d.get("spec", {}).get("podSelector") or {}).get("matchLabels"),
            {"app.kubernetes.io/name": REDIS})
            for _, _, d in self.kind("NetworkPolicy")), "deploy/k8s",
            "no NetworkPolicy restricts who reaches Redis")

    def check_redis_args(self, w, argv, limits):
        argv = [str(a) for a in argv]
        opts = {}
        for i, a in enumerate(argv):
            if a.startswith("--") and i + 1 < len(argv):
                opts[a[2:]] = argv[i + 1]
        self.expect(opts.get("maxmemory-policy") in REDIS_POLICIES, w,
                    "redis --maxmemory-policy must be one of %s (every "
                    "rate-limit key has a TTL), got %r"
                    % ("/".join(REDIS_POLICIES), opts.get("maxmemory-policy")))
        self.expect("maxmemory" in opts, w, "redis --maxmemory is missing: "
                    "memory must be bounded")
        self.expect(opts.get("save") == "" and opts.get("appendonly") == "no",
                    w, "redis must run without persistence (--save \"\" "
                    "--appendonly no): limits need none")
        if "maxmemory" in opts and limits.get("memory"):
            try:
                self.expect(quantity(opts["maxmemory"])
                            < quantity(limits["memory"]), w,
                            "redis --maxmemory must be below the container's "
                            "memory limit")
            except ValueError as e:
                self.fail(w, str(e))

    def check_controller(self):
        path, cm = self.obj("ConfigMap", CONTROLLER_CONFIG)
        if cm is None:
            return
        w = self.where(path, "ConfigMap", CONTROLLER_CONFIG)
        data = cm.get("data") or {}
        for key in ("limit-req-status-code", "limit-conn-status-code"):
            self.expect(data.get(key) in ("429", "503"), w,
                        "%s must be \"429\" or \"503\", got %r"
                        % (key, data.get(key)))
        flags = (self.app_uvicorn() or ({}, None))[0]
        try:
            self.expect(float(data.get("upstream-keepalive-timeout"))
                        < float(flags.get("timeout-keep-alive")), w,
                        "upstream-keepalive-timeout must be below uvicorn's "
                        "--timeout-keep-alive (or the controller reuses "
                        "connections the pods close: 502s)")
        except (TypeError, ValueError):
            self.fail(w, "upstream-keepalive-timeout must be a number below "
                      "uvicorn's --timeout-keep-alive")

    # --- docker compose --------------------------------------------------

    def check_compose(self):
        path = os.path.join(self.dir, "docker-compose.yml")
        if not self.expect(os.path.isfile(path), self.rel(path), "missing"):
            return
        docs = self.load_yaml(path)
        if not docs:
            return
        doc = docs[0]
        w = self.rel(path)
        services = doc.get("services") if isinstance(doc, dict) else None
        if not self.expect(isinstance(services, dict), w,
                           "no services mapping"):
            return
        self.compose = doc
        networks = doc.get("networks") or {}
        for need in ("gateway", "api", REDIS):
            self.expect(need in services, w, "service %s is missing" % need)
        for name, svc in services.items():
            sw = "%s: service %s" % (w, name)
            svc = svc or {}
            self.expect("image" in svc or "build" in svc, sw,
                        "needs an image or a build")
            if svc.get("ports"):
                self.expect(name in PUBLISHED_OK, sw, "publishes ports %r: "
                            "only %s may be reachable from outside"
                            % (svc["ports"], "/".join(sorted(PUBLISHED_OK))))
            nets = svc.get("networks")
            nets = list(nets) if isinstance(nets, (list, dict)) else []
            self.expect(nets, sw, "must name its networks (no default "
                        "network)")
            for n in nets:
                self.expect(n in networks, sw, "network %s is not declared"
                            % n)
            for vol in svc.get("volumes") or []:
                src = str(vol).split(":")[0]
                if src.startswith("."):
                    self.expect(os.path.exists(os.path.join(self.dir, src)),
                                sw, "volume source %s does not exist" % src)
            build = svc.get("build")
            if isinstance(build, dict):
                dockerfile = os.path.join(self.dir, build.get("context", "."),
                                          build.get("dockerfile",
                                                    "Dockerfile"))
                self.expect(os.path.isfile(dockerfile), sw,
                            "build dockerfile %s does not exist"
                            % build.get("dockerfile"))
        redis = services.get(REDIS) or {}
        rnets = list(redis.get("networks") or [])
        for n in rnets:
            self.expect((networks.get(n) or {}).get("internal") is True,
                        "%s: service %s" % (w, REDIS), "network %s must be "
                        "internal: true (Redis is never reachable from "
                        "outside)" % n)
        self.expect(not redis.get("ports"), "%s: service %s" % (w, REDIS),
                    "must publish no ports")
        api = services.get("api") or {}
        gateway = services.get("gateway") or {}
        self.expect(set(api.get("networks") or []) & set(rnets), w,
                    "api and redis share no network")
        self.expect(set(api.get("networks") or [])
                    & set(gateway.get("networks") or []), w,
                    "gateway and api share no network")
        self.expect(bool(gateway.get("ports")), w, "the gateway publishes no "
                    "port")
        for name in ("api", REDIS):
            self.expect(bool((services.get(name) or {}).get("healthcheck")),
                        "%s: service %s" % (w, name), "needs a healthcheck")
        mounts = [str(v).split(":") for v in gateway.get("volumes") or []]
        self.expect(any(m[0] == "./nginx/admit.conf" for m in mounts), w,
                    "the gateway must mount ./nginx/admit.conf")
        env = api.get("environment") or {}
        if isinstance(env, list):
            env = dict(str(e).split("=", 1) for e in env)
        aw = "%s: service api" % w

        def compose_ports(host):
            return [6379] if host in services else None
        # As compose does with the variables unset: ${X:-default} -> default.
        env = {k: re.sub(r"\$\{\w+(?::?-([^}]*))?\}",
                         lambda m: m.group(1) or "", str(v))
               for k, v in env.items()}
        self.check_settings(aw, env, "compose service", compose_ports)
        self.check_share(aw, env, 1)
        parsed = uvicorn_flags(api.get("command"))
        if self.expect(parsed is not None, aw, "command must run uvicorn"):
            k8s = self.app_uvicorn()
            if k8s:
                self.expect(parsed[0] == k8s[0] and parsed[1] == k8s[1], aw,
                            "uvicorn command differs from the Kubernetes "
                            "Deployment's: %r vs %r" % (parsed, k8s))

    # --- Dockerfile --------------------------------------------------------

    def check_dockerfile(self):
        path = os.path.join(self.dir, "Dockerfile")
        w = self.rel(path)
        if not self.expect(os.path.isfile(path), w, "missing"):
            return
        with open(path) as f:
            text = f.read().replace("\\\n", " ")
        lines = [ln.strip() for ln in text.splitlines()
                 if ln.strip() and not ln.strip().startswith("#")]
        self.expect(lines and lines[0].upper().startswith("FROM "), w,
                    "must start with FROM")
        cmds = [ln for ln in lines if ln.upper().startswith("CMD ")]
        if not self.expect(cmds, w, "no CMD"):
            return
        try:
            argv = json.loads(cmds[-1][4:])
        except ValueError:
            self.fail(w, "CMD must be a JSON array (exec form)")
            return
        parsed = uvicorn_flags(argv)
        if self.expect(parsed is not None, w, "CMD must run uvicorn"):
            for flag, value in UVICORN_FLAGS.items():
                self.expect(parsed[0].get(flag) == value, w,
                            "CMD uvicorn --%s must be %s" % (flag, value))
        for ln in lines:
            if ln.upper().startswith("COPY ") and "--from" not in ln:
                src = ln.split()[1]
                if src != ".":
                    self.expect(os.path.exists(os.path.join(self.root, src)),
                                w, "COPY source %s does not exist" % src)

    # --- nginx ---------------------------------------------------------------

    def nginx_path(self):
        return os.path.join(self.dir, "nginx", "admit.conf")

    def check_nginx_static(self):
        path = self.nginx_path()
        w = self.rel(path)
        if not self.expect(os.path.isfile(path), w, "missing"):
            return
        self.files += 1
        with open(path) as f:
            self.nginx_text = f.read()
        try:
            tree = nginx_parse(self.nginx_text)
        except ValueError as e:
            self.fail(w, "does not parse: %s" % e)
            return
        self.nginx = tree
        for main_only in ("user", "worker_processes", "pid", "events",
                          "http", "load_module"):
            self.expect(not nginx_find(tree, main_only), w,
                        "'%s' does not belong in an http-context file"
                        % main_only)
        zones = nginx_find(tree, "limit_req_zone")
        self.expect(any(z[1][0] == "$binary_remote_addr" for z in zones), w,
                    "no per-IP limit_req_zone ($binary_remote_addr)")
        self.expect(any(n[1][0] == "$binary_remote_addr"
                        for n in nginx_find(tree, "limit_conn_zone")), w,
                    "no per-IP limit_conn_zone ($binary_remote_addr)")
        for d in ("limit_req_status", "limit_conn_status"):
            v = nginx_value(tree, d)
            self.expect(v in (["429"], ["503"]), w,
                        "%s must be 429 or 503, got %r" % (d, v))
        servers = nginx_find(tree, "server")
        if not self.expect(len(servers) == 1, w, "expected one server block"):
            return
        server = servers[0][2]
        self.expect(nginx_find(server, "limit_conn"), w,
                    "the server applies no per-IP limit_conn")
        for d in ("client_max_body_size", "client_body_buffer_size",
                  "client_header_timeout", "client_body_timeout",
                  "send_timeout", "keepalive_timeout"):
            self.expect(nginx_value(server, d) is not None, w,
                        "server needs %s (bounded buffering, timeouts)" % d)
        locations = {tuple(n[1]): n[2] for n in nginx_find(server,
                                                           "location")}
        root = locations.get(("/",))
        api = locations.get(("/api/",))
        agent = locations.get(("=", "/agent")) or locations.get(("/agent",))
        if self.expect(root is not None, w, "no 'location /' (static UI)"):
            self.expect(nginx_value(root, "root") is not None, w,
                        "location / must serve files (root)")
        if self.expect(api is not None, w, "no 'location /api/'"):
            self.expect(nginx_find(api, "limit_req"), w,
                        "location /api/ applies no limit_req")
            self.expect(nginx_value(api, "proxy_pass") is not None, w,
                        "location /api/ does not proxy_pass")
            self.expect(nginx_value(api, "proxy_max_temp_file_size")
                        == ["0"], w, "location /api/ must not spool "
                        "responses to disk (proxy_max_temp_file_size 0)")
            for d in ("proxy_connect_timeout", "proxy_read_timeout",
                      "proxy_send_timeout", "proxy_buffers"):
                self.expect(nginx_value(api, d) is not None, w,
                            "location /api/ needs %s" % d)
            nu = nginx_value(api, "proxy_next_upstream") or []
            self.expect("non_idempotent" not in nu, w, "never retry a POST "
                        "on another upstream (non_idempotent)")
        if self.expect(agent is not None, w, "no 'location = /agent'"):
            headers = [tuple(n[1]) for n in nginx_find(agent,
                                                       "proxy_set_header")]
            self.expect(("Upgrade", "$http_upgrade") in headers, w,
                        "location /agent must pass the Upgrade header")
            self.expect(any(h[0] == "Connection" and h[1] != ""
                            for h in headers), w, "location /agent must set "
                        "Connection for the upgrade")
            self.expect(nginx_value(agent, "proxy_http_version") == ["1.1"],
                        w, "location /agent needs proxy_http_version 1.1")
            self.expect(nginx_find(agent, "limit_conn"), w,
                        "location /agent applies no limit_conn")
        flags = (self.app_uvicorn() or ({}, None))[0]
        for up in nginx_find(tree, "upstream"):
            ka = nginx_value(up[2], "keepalive_timeout")
            if ka and flags.get("timeout-keep-alive", "").isdigit():
                self.expect(seconds(ka[0])
                            < int(flags["timeout-keep-alive"]), w,
                            "upstream %s keepalive_timeout %s must be below "
                            "uvicorn's --timeout-keep-alive %s (502s "
                            "otherwise)" % (up[1][0], ka[0],
                                            flags["timeout-keep-alive"]))

    def check_nginx_t(self):
        path = self.nginx_path()
        if self.nginx is None:
            return  # already reported
        w = self.rel(path)
        nginx = shutil.which("nginx") or (
            "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
            else None)
        if not self.expect(nginx is not None, w, "nginx is not installed: "
                           "run `make deps` (Debian package nginx)"):
            return
        tmp = tempfile.mkdtemp(prefix="admit-nginx-t-")
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            text, notes = self.nginx_for_test(self.nginx_text, port)
            with open(os.path.join(tmp, "admit.conf"), "w") as f:
                f.write(text)
            mime = "/etc/nginx/mime.types"
            top = "\n".join([
                "# generated by test/deploy/check_deploy.py",
                "worker_processes 1;",
                "pid %s/nginx.pid;" % tmp,
                "error_log %s/error.log;" % tmp,
                "events { worker_connections 64; }",
                "http {",
                ("  include %s;" % mime) if os.path.isfile(mime)
                else "  types { text/html html; }",
                "  access_log %s/access.log;" % tmp,
            ] + ["  %s_temp_path %s/%s;" % (t, tmp, t) for t in
                 ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")] + [
                "  include %s/admit.conf;" % tmp,
                "}", ""])
            with open(os.path.join(tmp, "nginx.conf"), "w") as f:
                f.write(top)
            r = subprocess.run(
                [nginx, "-t", "-p", tmp + "/", "-c", tmp + "/nginx.conf",
                 "-e", tmp + "/error.log"], capture_output=True, text=True,
                timeout=60)
            out = (r.stdout + r.stderr).replace(tmp + "/admit.conf", w)
            if self.expect(r.returncode == 0, w, "nginx -t rejects it:\n    "
                           + "\n    ".join(out.strip().splitlines())):
                self.nginx_note = "nginx -t accepted it (%s)" % "; ".join(
                    notes)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def nginx_for_test(text, port):
        """Move listens to loopback:port; unresolvable upstream hosts to
        127.0.0.1. Returns (text, notes)."""
        notes = []

        def listen(m):
            notes.append("listen %s -> 127.0.0.1:%d" % (m.group(2), port))
            return "%s127.0.0.1:%d%s" % (m.group(1), port, m.group(3))
        text = re.sub(r"(?m)^(\s*listen\s+)([^\s;]+)([\s;])", listen, text)

        def upstream(m):
            host = m.group(2)
            try:
                socket.getaddrinfo(host, None)
                return m.group(0)
            except OSError:
                notes.append("upstream host %s -> 127.0.0.1" % host)
                return "%s127.0.0.1%s" % (m.group(1), m.group(3))
        text = re.sub(r"(?m)^(\s*server\s+)([A-Za-z][A-Za-z0-9.-]*)(:\d+)",
                      upstream, text)
        return text, sorted(set(notes))

    # --- consistency across files -----------------------------------------

    def check_cross(self):
        _, cm = self.objects.get(("ConfigMap", CONTROLLER_CONFIG),
                                 (None, None))
        if cm and self.nginx:
            data = cm.get("data") or {}
            for d, key in (("limit_req_status", "limit-req-status-code"),
                           ("limit_conn_status", "limit-conn-status-code")):
                v = nginx_value(self.nginx, d)
                self.expect(v and data.get(key) == v[0],
                            self.rel(self.nginx_path()),
                            "%s %s differs from the ingress controller's %s "
                            "%r: the gateway must answer the same status "
                            "either way" % (d, v and v[0], key,
                                            data.get(key)))
        paths = self.ingress_paths()
        self.expect(any(p.startswith("/api") for p in paths), "deploy/k8s",
                    "no Ingress path for /api")
        self.expect("/agent" in paths, "deploy/k8s",
                    "no Ingress path for /agent")
        if self.compose:
            env = ((self.compose.get("services") or {}).get("api") or {}) \
                .get("environment") or {}
            _, app_cm = self.objects.get(("ConfigMap", APP_CONFIG),
                                         (None, None))
            if app_cm and isinstance(env, dict):
                keys = set(app_cm.get("data") or {})
                extra = set(env) - keys - {"VENDOR_API_KEY"}
                missing = keys - set(env)
                self.expect(not extra and not missing,
                            "deploy/docker-compose.yml: service api",
                            "environment keys differ from ConfigMap %s: "
                            "missing %s, extra %s" % (
                                APP_CONFIG, sorted(missing), sorted(extra)))

    def check_readme(self):
        path = os.path.join(self.dir, "README.md")
        w = self.rel(path)
        if not self.expect(os.path.isfile(path), w, "missing"):
            return
        with open(path) as f:
            text = f.read()
        _, cm = self.objects.get(("ConfigMap", APP_CONFIG), (None, None))
        keys = list((cm or {}).get("data") or {})
        fake_vendor = os.path.join(self.root, FAKE_VENDOR)
        if os.path.isfile(fake_vendor):
            with open(fake_vendor) as f:
                keys += sorted(set(re.findall(r'"(VENDOR_[A-Z_]+)"',
                                              f.read())))
        for key in keys:
            self.expect("`%s`" % key in text, w,
                        "setting %s is not documented" % key)
        for dirpath, _, names in os.walk(self.dir):
            for name in names:
                rel = os.path.relpath(os.path.join(dirpath, name), self.dir)
                if name != "README.md":
                    self.expect(rel in text, w, "file %s is not described"
                                % rel)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deploy", default=os.path.join(ROOT, "deploy"),
                        help="the deploy directory (default: the repo's)")
    parser.add_argument("--no-nginx", action="store_true",
                        help="skip the nginx -t step")
    args = parser.parse_args(argv)
    checker = Checker(args.deploy, run_nginx=not args.no_nginx)
    checker.nginx_note = "nginx -t skipped"
    ok = checker.run()
    if not ok:
        print("check-deploy: FAILED, %d problem(s) in %s:"
              % (len(checker.errors), checker.rel(checker.dir)))
        for e in checker.errors:
            print("  - " + e)
        return 1
    print("check-deploy: OK: %d checks on %d files; %s"
          % (checker.checks, checker.files, checker.nginx_note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
