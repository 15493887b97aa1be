"""xvla.domains: the one rule for which ids a new domain may take (released ids are reserved only on the
released base model), and which parameters are domain tables."""

from types import SimpleNamespace

import pytest

from xvla.domains import (
    RELEASED_DOMAINS,
    canonical_name,
    free_domains,
    is_domain_table,
    is_released_base,
    smallest_free,
    used_domains,
)


def config(num_domains: int, domains: dict | None = None, domain_id: int = 0) -> SimpleNamespace:
    return SimpleNamespace(num_domains=num_domains, domains=domains, domain_id=domain_id)


def test_the_released_base_reserves_its_released_ids():
    base = config(30)
    assert is_released_base(base)
    assert set(RELEASED_DOMAINS) <= set(used_domains(base))
    assert free_domains(base)[0] == max(RELEASED_DOMAINS) + 1


def test_a_checkpoint_with_its_own_table_reserves_only_its_trained_ids():
    own = config(30, domains={0: "a", 2: "b"})
    assert not is_released_base(own)
    assert used_domains(own) == {0: "a", 2: "b"}
    assert free_domains(own)[:2] == [1, 3]


def test_released_can_be_settled_before_the_table_changes():
    # A policy built on the released base keeps the released ids reserved after an adapter records a table.
    after_adapter = config(30, domains={0: "default", 19: "robot"})
    assert smallest_free(used_domains(after_adapter, released=True), 30, "") == 20
    assert smallest_free(used_domains(after_adapter), 30, "") == 1


def test_no_free_id_says_how_to_reuse_one():
    with pytest.raises(ValueError, match="all 2 ids are in use.*pass --new_domain.id"):
        smallest_free({0, 1}, 2, "pass --new_domain.id=<id> to reuse one explicitly")


def test_domain_tables_are_recognised_through_wrappers():
    assert (
        canonical_name("module._orig_mod.transformer.soft_prompt_hub.weight")
        == "transformer.soft_prompt_hub.weight"
    )
    assert is_domain_table("module.transformer.action_decoder.fc1.weight")
    assert is_domain_table("policy.model.transformer.vlm_proj.fc.weight")
    assert not is_domain_table("transformer.blocks.0.attn.qkv.weight")
