#!/usr/bin/env bash
# The test command from the README: every unit, property and multi-process cluster test.
# Tests that need root, cgroups or other system pieces skip with a printed reason, unless
# BRIM_TEST_REQUIRE_ALL=1 (as in CI), where such a skip is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/brim-target}"
# Cluster tests start real processes; two at a time fits a 2-core machine.
cargo test --workspace --locked --no-fail-fast -- --test-threads="${BRIM_TEST_THREADS:-2}"
