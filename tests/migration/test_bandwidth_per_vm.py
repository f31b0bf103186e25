"""A plan's ``bandwidth`` (and ``--bandwidth``) limits each VM, as the plan schema and ``plan estimate`` say:
VMs synced at once each get the whole rate; the disks and passes of one VM share it."""

from __future__ import annotations

import math

from scmt_cli.services.migration.context import MigrationContext


def test_each_vm_has_its_own_bucket_at_the_same_rate(ctx: MigrationContext) -> None:
    a, b = [vm.name for vm in ctx.plan.vms][:2]
    ctx.bandwidth_override = 8_000_000.0
    first, second = ctx.bucket(a), ctx.bucket(b)
    assert first is not None and second is not None and first is not second
    assert first.rate == second.rate == 8_000_000.0
    assert ctx.bucket(a) is first  # its disks and later passes draw from the same bucket


def test_a_new_rate_gets_a_new_bucket_and_unlimited_gets_none(ctx: MigrationContext) -> None:
    vm = ctx.plan.vms[0].name
    ctx.bandwidth_override = 8_000_000.0
    old = ctx.bucket(vm)
    ctx.bandwidth_override = 4_000_000.0
    new = ctx.bucket(vm)
    assert new is not None and new is not old and new.rate == 4_000_000.0
    ctx.bandwidth_override = math.inf
    assert ctx.bucket(vm) is None
