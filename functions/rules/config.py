"""The rules configuration a worker evaluates: the compiled rule set plus the users' switches."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from functions.rules.ruleset import Rule, RuleSet
from screener.events.models import AlertAudience


@dataclass(frozen=True)
class RulesConfig:
    """A consistent snapshot of ``alert_rules`` and ``user_settings``; replaced whole on reload.

    ``switches`` maps a registered user to their personal overrides ``{rule_type: on}``; a rule
    without an override follows its ``default_on`` (rules.md). ``lapsed_owners`` are rule owners
    without a live plan while billing is on: their own rules are not evaluated (client.md decision 7).
    """

    ruleset: RuleSet
    switches: Mapping[str, Mapping[str, bool]] = field(default_factory=dict)
    # Every row, broken ones too (the rule set skips those), so a reload can replace one row.
    rules: Mapping[str, Rule] = field(default_factory=dict)
    lapsed_owners: frozenset[str] = frozenset()
    audiences: Mapping[str, AlertAudience] = field(init=False)

    def __post_init__(self) -> None:
        audiences = {c.rule_type: audience_of(c.rule, self.switches) for c in self.ruleset.ordered}
        object.__setattr__(self, "audiences", audiences)

    @classmethod
    def of(
        cls,
        rules: list[Rule],
        switches: Mapping[str, Mapping[str, bool]] | None = None,
        lapsed_owners: frozenset[str] = frozenset(),
    ) -> RulesConfig:
        """Compile ``rules`` leniently (a broken rule is logged and skipped) into a config."""
        ordered = sorted(rules, key=lambda r: r.rule_type)
        return cls(
            RuleSet.build(ordered, strict=False), switches or {}, {r.rule_type: r for r in ordered}, lapsed_owners
        )

    def changed(
        self, rules: Mapping[str, Rule | None], switches: Mapping[str, Mapping[str, bool] | None]
    ) -> RulesConfig:
        """Return this config with some rows replaced (None: deleted); only changed rules recompile.

        Compiled rules are cached by their text, so a changed rule set costs one compile per new
        expression; switches alone reuse the rule set as it is. The lapsed owners stay as they were
        until the caller reads the plans again (``gated``).
        """
        merged_switches = {**self.switches, **{u: s for u, s in switches.items() if s is not None}}
        for user, value in switches.items():
            if value is None:
                merged_switches.pop(user, None)
        if not rules:
            return RulesConfig(self.ruleset, merged_switches, self.rules, self.lapsed_owners)
        merged = {**self.rules, **{t: r for t, r in rules.items() if r is not None}}
        for rule_type, rule in rules.items():
            if rule is None:
                merged.pop(rule_type, None)
        return RulesConfig.of(list(merged.values()), merged_switches, self.lapsed_owners)

    @property
    def owners(self) -> frozenset[str]:
        """Return the users who own at least one rule."""
        return frozenset(r.owner for r in self.rules.values() if r.owner is not None)

    def gated(self, lapsed_owners: Collection[str]) -> RulesConfig:
        """Return this config evaluating no rule of ``lapsed_owners`` (owners without a live plan)."""
        lapsed = frozenset(lapsed_owners)
        return self if lapsed == self.lapsed_owners else dataclasses.replace(self, lapsed_owners=lapsed)

    def enabled(self, *, live_only: bool = False) -> list[str]:
        """Return the rules to evaluate: globally enabled ones (only ``live`` ones for a forming minute).

        A rule whose owner's plan has lapsed is left out; rules without an owner never are.
        """
        return [
            c.rule_type
            for c in self.ruleset.ordered
            if c.rule.enabled and (c.rule.live or not live_only) and c.rule.owner not in self.lapsed_owners
        ]


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
