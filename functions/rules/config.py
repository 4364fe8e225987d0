"""The rules configuration a worker evaluates: the compiled rule set plus the users' switches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from functions.rules.ruleset import Rule, RuleSet
from screener.events.models import AlertAudience


@dataclass(frozen=True)
class RulesConfig:
    """A consistent snapshot of ``alert_rules`` and ``user_settings``; replaced whole on reload.

    ``switches`` maps a registered user to their personal overrides ``{rule_type: on}``; a rule
    without an override follows its ``default_on`` (rules.md).
    """

    ruleset: RuleSet
    switches: Mapping[str, Mapping[str, bool]] = field(default_factory=dict)
    audiences: Mapping[str, AlertAudience] = field(init=False)

    def __post_init__(self) -> None:
        audiences = {c.rule_type: audience_of(c.rule, self.switches) for c in self.ruleset.ordered}
        object.__setattr__(self, "audiences", audiences)

    @classmethod
    def of(cls, rules: list[Rule], switches: Mapping[str, Mapping[str, bool]] | None = None) -> RulesConfig:
        """Compile ``rules`` leniently (a broken rule is logged and skipped) into a config."""
        return cls(RuleSet.build(rules, strict=False), switches or {})

    def enabled(self, *, live_only: bool = False) -> list[str]:
        """Return the rules to evaluate: globally enabled ones (only ``live`` ones for a forming minute)."""
        return [c.rule_type for c in self.ruleset.ordered if c.rule.enabled and (c.rule.live or not live_only)]


def audience_of(rule: Rule, switches: Mapping[str, Mapping[str, bool]]) -> AlertAudience:
    """Return who an alert of ``rule`` is for.

    A user's own rule is for its owner only (unless they switched it off). A global rule is public
    when it is on by default (anonymous clients get the defaults) and goes to every registered user
    whose personal setting, or the default, has it on.
    """
    if rule.owner is not None:
        owner_on = switches.get(rule.owner, {}).get(rule.rule_type, True)
        return AlertAudience(public=False, users=[rule.owner] if owner_on else [], owner=rule.owner)
    users = sorted(user for user, overrides in switches.items() if overrides.get(rule.rule_type, rule.default_on))
    return AlertAudience(public=rule.default_on, users=users)
