"""The weights' contract as a type (amf.inference.manifest.Manifest): the shipped manifest reads and writes back byte
for byte, the JSON schema names the keys the type writes, the audit sees a key the type does not know, and no module
of amf indexes a manifest by key."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from amf.errors import WeightsError
from amf.inference.manifest import SCHEMA, DataRecord, Manifest, TrainingJob, TrainingRecord
from amf.inference.weights import read_manifest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights"


def test_the_shipped_manifest_reads_and_writes_back_byte_for_byte():
    manifest = read_manifest(SHIPPED)
    assert manifest.text().encode() == (SHIPPED / "manifest.json").read_bytes()
    assert manifest.provenance.member_folds == {"member_0": "all/fold0"}
    assert len(manifest.provenance.trained_patches) == manifest.provenance.data.n


def test_the_schema_names_the_keys_the_type_writes():
    schema = json.loads(SCHEMA.read_text())
    written = Manifest.read(SHIPPED / "manifest.json").to_dict()
    assert set(schema["required"]) <= set(written)
    assert set(written) == set(schema["properties"]), "a key written but not described, or described but not written"
    sections = {"training": TrainingRecord, "data": DataRecord}
    for key, record in sections.items():
        named = set(schema["properties"][key].get("properties", {})) | set(schema["properties"][key]["required"])
        assert named <= set(record().to_dict()), key
    job = schema["properties"]["training"]["properties"]["jobs"]["items"]
    assert set(job["required"]) <= set(TrainingJob().to_dict())


def test_the_typed_manifest_validates_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(Manifest.read(SHIPPED / "manifest.json").to_dict(), schema)


def test_a_key_the_type_does_not_know_is_seen_by_the_audit(tmp_path):
    from amf.audit.checks import check_schema

    pytest.importorskip("jsonschema")
    raw = json.loads((SHIPPED / "manifest.json").read_text())
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({**raw, "calibration": {"temperature": 0.5}}, indent=2))
    finding = check_schema(Manifest.read(path), path)
    assert finding.status == "fail" and "not what its typed manifest writes back" in finding.detail
    path.write_bytes((SHIPPED / "manifest.json").read_bytes())
    assert check_schema(Manifest.read(path), path).status == "pass"


@pytest.mark.parametrize("change, message", [
    ({"format_version": 2}, "format_version 2"),
    ({"threshold": {"value": 1.5, "method": "x"}}, "not a probability"),
    ({"members": []}, "lists no members"),
    ({"members": [{"file": "../x.safetensors", "sha256": "0" * 64}]}, "not a plain file name"),
    ({"tta": {"views": 0}}, "positive integer"),
    ({"model": {"input_size": 128}}, "architecture name"),
    ({"training": ["not", "an", "object"]}, "training is not an object"),
])
def test_what_would_give_wrong_answers_is_refused_naming_the_file(change, message):
    raw = json.loads((SHIPPED / "manifest.json").read_text())
    with pytest.raises(WeightsError, match=message):
        Manifest.from_dict({**raw, **change}, "weights/manifest.json")


def _indexes_a_manifest(node: ast.AST) -> bool:
    """``manifest[...]``, ``x.manifest[...]`` or ``manifest.get(...)``."""
    def named(n: ast.AST) -> bool:
        return (isinstance(n, ast.Name) and n.id == "manifest") or (isinstance(n, ast.Attribute)
                                                                    and n.attr == "manifest")
    if isinstance(node, ast.Subscript):
        return named(node.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return named(node.func.value)
    return False


def test_no_module_of_amf_indexes_a_manifest_by_key():
    found = []
    for path in sorted((ROOT / "amf").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if _indexes_a_manifest(node):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == [], "read the typed Manifest's attributes instead: " + ", ".join(found)
