"""Compiled contracts staged for another checkout (a container image's ``/app``) are found there by the same
cache lookup, so the image needs no compiler."""

from __future__ import annotations

import json
from pathlib import Path

from common import compiler
from common.compiler import CONTRACT_NAME, DEMAND_RESPONSE_NAME, compile_contract, stage_artifacts, uncompiled


def test_artifacts_staged_for_this_checkout_are_the_cache_it_reads(base_settings, tmp_path):
    build = tmp_path / "build"
    staged = stage_artifacts(base_settings, build, compiler.ROOT)
    settings = base_settings.replace(build_dir=build)
    assert uncompiled(settings) == []
    for path, name in zip(staged, (CONTRACT_NAME, DEMAND_RESPONSE_NAME), strict=True):
        assert json.loads(path.read_text()) == compile_contract(base_settings, name).__dict__


def test_artifacts_staged_for_another_root_carry_its_key_and_the_same_code(base_settings, tmp_path):
    staged = stage_artifacts(base_settings, tmp_path / "image-build", Path("/app"))
    here = compile_contract(base_settings)
    there = json.loads(staged[0].read_text())
    assert there["source_hash"] != here.source_hash and staged[0].name == f"{CONTRACT_NAME}-{there['source_hash']}.json"
    assert (there["bytecode"], there["abi"]) == (here.bytecode, here.abi)
    # The image's build checks that its checkout at /app finds them (python -m common.compiler check, exercised by
    # tests/ops/test_compose.py); here, an empty build directory needs both compiled.
    assert uncompiled(base_settings.replace(build_dir=tmp_path / "empty")) == [CONTRACT_NAME, DEMAND_RESPONSE_NAME]
