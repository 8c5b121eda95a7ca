// Validates deploy/k8s offline: every object kustomization.yaml yields (its resources and the
// ConfigMap its generator makes) against the official Kubernetes OpenAPI schemas, through the
// npm package kubernetes-models; then the references between the objects that no schema can
// check (names of ConfigMaps, Secrets, claims, named ports, the headless Service and the pods'
// DNS names, the worker count against the job file), and that every LORAPS_* variable is an
// option of the program the container runs. Finally it breaks copies of the manifests on
// purpose and checks that each break is caught, so a validator that accepts anything fails.
// (The official schemas allow fields they do not name, so a misspelt field name is not caught
// here; the API server's strict field validation catches it at `kubectl apply`.)
//   node validate.mjs [K8S_DIR] [BIN_DIR]
import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { parseAllDocuments, parse } from "yaml";

const here = path.dirname(new URL(import.meta.url).pathname);
const dir = process.argv[2] || path.join(here, "../../deploy/k8s");
const binDir = process.argv[3] || process.env.LORAPS_BIN || "";

// ---- loading, as kustomize builds it ---------------------------------------------------------

function build() {
  const k = parse(readFileSync(path.join(dir, "kustomization.yaml"), "utf8"));
  if (k.kind !== "Kustomization") throw new Error("kustomization.yaml: not a Kustomization");
  const objects = [];
  for (const file of k.resources || []) {
    const text = readFileSync(path.join(dir, file), "utf8");
    for (const doc of parseAllDocuments(text)) {
      if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
      const o = doc.toJS();
      if (o) objects.push({ file, o });
    }
  }
  for (const g of k.configMapGenerator || []) {
    const data = {};
    for (const f of g.files || []) data[path.basename(f)] = readFileSync(path.join(dir, f), "utf8");
    objects.push({ file: "configMapGenerator", o: { apiVersion: "v1", kind: "ConfigMap", metadata: { name: g.name }, data } });
  }
  const labels = {};
  for (const l of k.labels || []) Object.assign(labels, l.pairs);
  for (const { o } of objects) o.metadata.labels = { ...(o.metadata.labels || {}), ...labels };
  return { k, objects };
}

// ---- schema validation ------------------------------------------------------------------------

async function modelClass(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const mod = await import(`kubernetes-models/${group ? group + "/" : ""}${version}`);
  if (!mod[kind]) throw new Error(`no schema for ${apiVersion} ${kind}`);
  return mod[kind];
}

async function schemaErrors(objects) {
  const errors = [];
  for (const { file, o } of objects) {
    try {
      const Cls = await modelClass(o.apiVersion, o.kind);
      new Cls(o).validate();
    } catch (e) {
      errors.push(`${file}: ${o.kind}/${o.metadata && o.metadata.name}: ${e.message.split("\n").slice(0, 4).join(" ")}`);
    }
  }
  return errors;
}

// ---- references no schema checks --------------------------------------------------------------

function podSpecs(objects) {
  const out = [];
  for (const { o } of objects) {
    const t = o.spec && o.spec.template;
    if (t && t.spec) out.push({ owner: o, pod: t.spec, podLabels: (t.metadata && t.metadata.labels) || {} });
  }
  return out;
}

function helpOf(bin) {
  if (!binDir) return null;
  try {
    return execFileSync(path.join(binDir, bin), ["--help"], { encoding: "utf8" });
  } catch (e) {
    return e.stdout || null;
  }
}

function referenceErrors({ k, objects }) {
  const errors = [];
  const byKind = (kind) => objects.filter((x) => x.o.kind === kind).map((x) => x.o);
  const names = (kind) => new Set(byKind(kind).map((o) => o.metadata.name));
  const configMaps = names("ConfigMap"), secrets = names("Secret"), claims = names("PersistentVolumeClaim");
  const images = new Set((k.images || []).map((i) => i.name));
  const jobFile = JSON.parse(byKind("ConfigMap").find((c) => c.data["job.json"]).data["job.json"]);
  const services = byKind("Service");
  const helps = {};

  for (const { owner, pod, podLabels } of podSpecs(objects)) {
    const where = `${owner.kind}/${owner.metadata.name}`;
    const vols = new Map((pod.volumes || []).map((v) => [v.name, v]));
    for (const v of pod.volumes || []) {
      if (v.configMap && !configMaps.has(v.configMap.name)) errors.push(`${where}: ConfigMap ${v.configMap.name} is not defined`);
      if (v.secret && !secrets.has(v.secret.secretName)) errors.push(`${where}: Secret ${v.secret.secretName} is not defined`);
      if (v.persistentVolumeClaim && !claims.has(v.persistentVolumeClaim.claimName))
        errors.push(`${where}: claim ${v.persistentVolumeClaim.claimName} is not defined`);
    }
    if (!pod.securityContext || pod.securityContext.runAsNonRoot !== true) errors.push(`${where}: pods must run as non-root`);
    for (const c of [...(pod.initContainers || []), ...pod.containers]) {
      const cw = `${where} container ${c.name}`;
      if (!images.has(c.image)) errors.push(`${cw}: image ${c.image} is not set by the kustomization's images`);
      for (const m of c.volumeMounts || []) if (!vols.has(m.name)) errors.push(`${cw}: mounts undefined volume ${m.name}`);
      const r = c.resources || {};
      for (const kind of ["requests", "limits"])
        for (const res of ["cpu", "memory"])
          if (!r[kind] || !r[kind][res]) errors.push(`${cw}: resources.${kind}.${res} is not set`);
      const ports = new Set((c.ports || []).map((p) => p.name));
      for (const probe of ["readinessProbe", "livenessProbe"]) {
        const p = c[probe];
        if (!p && !(pod.initContainers || []).includes(c)) errors.push(`${cw}: no ${probe}`);
        if (p && p.httpGet && typeof p.httpGet.port === "string" && !ports.has(p.httpGet.port))
          errors.push(`${cw}: ${probe} uses port ${p.httpGet.port}, which the container does not name`);
      }
      if (c.readinessProbe && c.readinessProbe.httpGet.path !== "/readyz") errors.push(`${cw}: readiness must ask /readyz`);
      if (c.livenessProbe && c.livenessProbe.httpGet.path !== "/healthz") errors.push(`${cw}: liveness must ask /healthz`);
      // Every LORAPS_* variable must be an option of the program (LORAPS_CURVE_*: issue 7's).
      const cmd = [...(c.command || []), ...(c.args || [])].join(" ");
      const prog = ["loraps-ps", "loraps-worker"].find((p) => cmd.includes(p));
      const env = Object.fromEntries((c.env || []).map((e) => [e.name, e.value]));
      if (prog && binDir) {
        helps[prog] = helps[prog] || helpOf(prog);
        for (const name of Object.keys(env)) {
          if (!name.startsWith("LORAPS_") || name.startsWith("LORAPS_CURVE_")) continue;
          const flag = "--" + name.slice(7).toLowerCase().replace(/_/g, "-");
          if (!helps[prog] || !helps[prog].includes(flag)) errors.push(`${cw}: ${name}: ${prog} has no option ${flag}`);
        }
      }
      if (prog === "loraps-ps" || prog === "loraps-worker") {
        const list = env.LORAPS_PEERS || env.LORAPS_SERVERS;
        if (!list) errors.push(`${cw}: neither LORAPS_PEERS nor LORAPS_SERVERS is set`);
        else checkEndpoints(cw, list.split(","), objects, services, errors);
      }
      if (prog === "loraps-ps" && !(c.ports || []).some((p) => p.name === "zmq")) errors.push(`${cw}: no zmq port`);
    }
    if (owner.kind === "Job" && podLabels["app.kubernetes.io/component"] === "worker") {
      const s = owner.spec;
      if (s.completionMode !== "Indexed") errors.push(`${where}: workers must be an Indexed Job (rank = index)`);
      if (s.completions !== jobFile.workers || s.parallelism !== jobFile.workers)
        errors.push(`${where}: completions ${s.completions} / parallelism ${s.parallelism}, but job.json has ${jobFile.workers} workers`);
    }
  }
  return errors;
}

// Every endpoint is tcp://<job>-<i>.<service>:<port>: i below the servers Job's completions, the
// service headless, selecting the server pods, with that port; the pods' subdomain the service.
function checkEndpoints(where, list, objects, services, errors) {
  const psJob = objects.map((x) => x.o).find((o) => o.kind === "Job" && o.spec.template.metadata.labels["app.kubernetes.io/component"] === "parameter-server");
  if (!psJob) return errors.push(`${where}: no parameter-server Job`);
  if (psJob.spec.completionMode !== "Indexed") errors.push(`Job/${psJob.metadata.name}: servers must be an Indexed Job (shard = index)`);
  const n = psJob.spec.completions;
  if (list.length !== n) errors.push(`${where}: ${list.length} server endpoints, but the servers Job runs ${n} shards`);
  list.forEach((ep, i) => {
    const m = /^tcp:\/\/([a-z0-9-]+)-(\d+)\.([a-z0-9-]+):(\d+)$/.exec(ep);
    if (!m) return errors.push(`${where}: endpoint ${ep} is not tcp://<job>-<index>.<service>:<port>`);
    const [, job, idx, svcName, port] = m;
    if (job !== psJob.metadata.name || Number(idx) !== i) errors.push(`${where}: endpoint ${i} is ${ep}, expected ${psJob.metadata.name}-${i}.*`);
    const svc = services.find((s) => s.metadata.name === svcName);
    if (!svc) return errors.push(`${where}: ${ep}: no Service ${svcName}`);
    if (svc.spec.clusterIP !== "None") errors.push(`Service/${svcName}: must be headless (clusterIP: None)`);
    if (!svc.spec.publishNotReadyAddresses) errors.push(`Service/${svcName}: publishNotReadyAddresses must be true (workers connect before servers are ready)`);
    if (psJob.spec.template.spec.subdomain !== svcName) errors.push(`Job/${psJob.metadata.name}: subdomain must be ${svcName} for ${ep} to resolve`);
    const labels = psJob.spec.template.metadata.labels;
    for (const [key, v] of Object.entries(svc.spec.selector || {}))
      if (labels[key] !== v) errors.push(`Service/${svcName}: selector ${key}=${v} does not select the server pods`);
    const sp = (svc.spec.ports || []).find((p) => String(p.port) === port);
    if (!sp) errors.push(`Service/${svcName}: no port ${port} for ${ep}`);
    const ps = psJob.spec.template.spec.containers[0];
    if (sp && typeof sp.targetPort === "string" && !(ps.ports || []).some((p) => p.name === sp.targetPort))
      errors.push(`Service/${svcName}: targetPort ${sp.targetPort} is not a port of the server container`);
  });
}

// ---- run ---------------------------------------------------------------------------------------

async function check(built) {
  return [...(await schemaErrors(built.objects)), ...referenceErrors(built)];
}

const built = build();
const errors = await check(built);
for (const e of errors) console.error("  " + e);
if (errors.length) {
  console.error(`FAIL: ${errors.length} problem(s) in ${dir}`);
  process.exit(1);
}
console.log(`validate: ${built.objects.length} objects valid against the Kubernetes schemas: ` +
  built.objects.map((x) => `${x.o.kind}/${x.o.metadata.name}`).join(", "));

// Breaks each must catch (schema and references). Each mutates a fresh copy.
const find = (b, kind, name) => b.objects.find((x) => x.o.kind === kind && (!name || x.o.metadata.name === name)).o;
const breaks = {
  "completions is a string": (b) => { find(b, "Job", "loraps-workers").spec.completions = "three"; },
  "a port number that is text": (b) => { find(b, "Job", "loraps-ps").spec.template.spec.containers[0].ports[0].containerPort = "zmq"; },
  "a service type that is a number": (b) => { find(b, "Service").spec.type = 17; },
  "a container without a name": (b) => { delete find(b, "Job", "loraps-workers").spec.template.spec.containers[0].name; },
  "probe on an unnamed port": (b) => { find(b, "Job", "loraps-ps").spec.template.spec.containers[0].readinessProbe.httpGet.port = "http"; },
  "Secret not defined": (b) => { b.objects = b.objects.filter((x) => x.o.kind !== "Secret"); },
  "claim not defined": (b) => { b.objects = b.objects.filter((x) => x.o.kind !== "PersistentVolumeClaim"); },
  "workers differ from job.json": (b) => { find(b, "Job", "loraps-workers").spec.parallelism = 2; },
  "service not headless": (b) => { find(b, "Service").spec.clusterIP = "10.0.0.1"; },
  "wrong subdomain": (b) => { find(b, "Job", "loraps-ps").spec.template.spec.subdomain = "ps"; },
  "endpoint of a missing shard": (b) => {
    const env = find(b, "Job", "loraps-workers").spec.template.spec.containers[0].env;
    env.find((e) => e.name === "LORAPS_SERVERS").value += ",tcp://loraps-ps-1.loraps-ps:5555";
  },
  "no memory limit": (b) => { delete find(b, "Job", "loraps-workers").spec.template.spec.containers[0].resources.limits.memory; },
};
if (binDir) breaks["a variable that is no option"] = (b) => {
  find(b, "Job", "loraps-workers").spec.template.spec.containers[0].env.push({ name: "LORAPS_NO_SUCH_OPTION", value: "1" });
};
let missed = 0;
for (const [what, mutate] of Object.entries(breaks)) {
  const b = build();
  mutate(b);
  const errs = await check(b);
  if (!errs.length) {
    console.error(`FAIL: the validator accepts a broken manifest: ${what}`);
    missed++;
  }
}
if (missed) process.exit(1);
console.log(`validate: ${Object.keys(breaks).length} deliberate breaks all caught`);
