#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from the fixture tables, so that fuzzing starts from every
case the tests know: the annotation table of meta-crd and the admission table of the webhook.
Files are named by the SHA-1 of their content (as libFuzzer names its own), so running this
again adds nothing twice. Usage: fuzz/seed.py (from anywhere)."""
import hashlib
import json
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent
corpus = root / "fuzz" / "corpus"


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


ann = json.loads((root / "meta-crd/tests/fixtures/annotations.json").read_text())
for case in ann["networks"]:
    put("annotation", case["annotation"])
for case in ann["default_network"]:
    put("annotation", case["annotation"] + "\n" + "net-a")

adm = json.loads((root / "meta-cni-webhook/tests/fixtures/admission.json").read_text())
for i, case in enumerate(adm["cases"]):
    r = case["request"]
    objects = [r.get("object"), r.get("oldObject")] + case["world"].get("nads", [])
    for o in objects:
        if not isinstance(o, dict):
            continue
        if o.get("kind") == "NetworkAttachmentDefinition":
            cfg = (o.get("spec") or {}).get("config")
            if isinstance(cfg, str):
                put("nad_config", cfg)
        if o.get("kind") == "Pod":
            a = (o.get("metadata") or {}).get("annotations") or {}
            nets = a.get("k8s.v1.cni.cncf.io/networks")
            if isinstance(nets, str):
                dflt = a.get("v1.multus-cni.io/default-network")
                put("annotation", (dflt + "\n" + nets) if dflt else nets)
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"seed-{i}",
            "kind": {
                "group": "k8s.cni.cncf.io" if r["kind"] == "NetworkAttachmentDefinition" else "",
                "version": "v1",
                "kind": r["kind"],
            },
            "subResource": r.get("subResource", ""),
            "operation": r["operation"],
            "namespace": r["namespace"],
            "name": r["name"],
            "userInfo": {"username": r.get("user", "")},
            "object": r.get("object"),
            "oldObject": r.get("oldObject"),
        },
    }
    put("admission_review", json.dumps(review))

for t in sorted(p.name for p in corpus.iterdir()):
    print(t, len(list((corpus / t).iterdir())))
