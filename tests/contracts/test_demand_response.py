"""DemandResponse against a real Ganache: events and their modification numbers and statuses, signed
opt-outs bound to the event's terms and withdrawable before the start, credits gated, bounded and priced on
chain, refused for a meter that opted out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from common.batches import pack_reading
from common.billing import text32
from common.chain import ChainClient
from common.demand_response import DemandResponse, Participation, Signal, Status, Terms
from common.deployment import Deployment
from common.eip712 import ReadingData, recover_optout_signer, sign_optout, sign_reading
from common.errors import ChainError
from common.tariff import PERIOD_SECONDS

DAY = 86_400
HOUR = 3_600
REGION = "dr-test"
RATE = 100_000  # millipence per kWh of reduction: 100 p/kWh
POWER_W = 500


def advance_to(dr: DemandResponse, t: int) -> None:
    """Move the chain's clock to ``t`` and mine a block there."""
    w3 = dr.client.w3
    now = int(w3.eth.get_block("latest")["timestamp"])
    w3.provider.make_request("evm_increaseTime", [max(0, t - now)])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


@dataclass
class Scene:
    """Three meters of one region with eleven days of steady use, and an event an hour or so ahead."""

    dr: DemandResponse
    meters: list[LocalAccount]
    event_id: int
    terms: Terms
    seqs: dict[str, int]
    registers: dict[str, int]
    last: dict[str, int]

    def advance_to(self, t: int) -> None:
        """Move the chain's clock to ``t`` (the snapshot fixture puts it back)."""
        advance_to(self.dr, t)

    def read(self, until: int, step: int, watts: dict[str, int] | None = None) -> None:
        """Each meter's readings every ``step`` seconds up to ``until``, at POWER_W (or its own watts)."""
        signed = []
        for m in self.meters:
            power = (watts or {}).get(m.address, POWER_W)
            t = self.last[m.address]
            while t + step <= until:
                t += step
                self.seqs[m.address] += 1
                self.registers[m.address] += power * step // HOUR
                r = ReadingData(m.address, self.seqs[m.address], t, self.registers[m.address])
                signed.append((r, sign_reading(bytes(m.key), self.dr.deployment.domain, r)))
            self.last[m.address] = t
        for i in range(0, len(signed), 200):  # a gas figure, not an estimate: Ganache runs each batch once
            batch = b"".join(pack_reading(r, s) for r, s in signed[i:i + 200])
            self.dr.client.transact(self.dr.settings.gateway_key,
                                    self.dr.billing.contract.functions.submitReadings(batch), gas=25_000_000)


@pytest.fixture
def dr(chain: ChainClient, deployment: Deployment, snapshot: None) -> Iterator[DemandResponse]:
    """The contract through the session's client, on a chain reverted after the test."""
    yield DemandResponse(chain, deployment)
    chain.decoder = None


def make_scene(dr: DemandResponse, history: bool = True) -> Scene:
    """Register three meters opened three days and six hours before the event (the fewest baseline days
    with their adjustment hours), with readings every 6 hours until now when ``history``."""
    now = dr.billing.now()
    start = -(-(now + HOUR) // PERIOD_SECONDS) * PERIOD_SECONDS
    opened = start - 3 * DAY - 6 * HOUR
    meters = [Account.create() for _ in range(3)]
    dr.billing.register_meters([(m.address, b"\x01" * 32, REGION, 0) for m in meters], opened_at=opened)
    terms = Terms(start, HOUR, 30 * 60, Signal.LEVEL, 2, RATE)
    event_id = dr.create_event("dfs-test", terms, regions=[REGION])
    scene = Scene(dr, meters, event_id, terms, {m.address: 0 for m in meters}, {m.address: 0 for m in meters},
                  {m.address: opened for m in meters})
    if history:
        scene.read(now, 6 * HOUR)
    return scene


def error_of(err: pytest.ExceptionInfo[ChainError]) -> str:
    """The custom error's name and arguments in a refused transaction's message."""
    return str(err.value).split("refused the call: ", 1)[-1]


def test_an_event_changed_after_notice_keeps_its_id_with_a_higher_modification_number(dr: DemandResponse) -> None:
    start = -(-(dr.billing.now() + 4 * HOUR) // PERIOD_SECONDS) * PERIOD_SECONDS
    terms = Terms(start, HOUR, HOUR, Signal.LEVEL, 1, RATE)
    meter = Account.create().address
    event_id = dr.create_event("dfs", terms, meters=[meter])
    first = dr.event(event_id)
    assert (first.modification, first.status, first.meters, first.regions) == (0, Status.FAR, (meter,), ())

    later = replace(terms, start=start + PERIOD_SECONDS, signal_kind=Signal.PRICE, signal_value=35_000)
    receipt = dr.modify_event(event_id, later)
    logged = dr.contract.events.DemandResponseEvent().process_receipt(receipt)
    assert [(e.args.id, e.args.modification, e.args.regions, e.args.meters) for e in logged] == [
        (event_id, 1, [], [meter])]  # the target lists, as the event's NatSpec says (they were empty)
    changed = dr.event(event_id)
    assert (changed.modification, changed.terms, changed.meters) == (1, later, (meter,))

    scene_clock = Scene(dr, [], event_id, later, {}, {}, {})
    scene_clock.advance_to(later.start - HOUR + 10)
    assert dr.event(event_id).status == Status.NEAR
    scene_clock.advance_to(later.start)
    assert dr.event(event_id).status == Status.ACTIVE
    with pytest.raises(ChainError) as err:
        dr.modify_event(event_id, replace(later, start=later.start + DAY))
    assert error_of(err).startswith(f"EventStarted({event_id}, {later.start}, ")
    scene_clock.advance_to(later.end)
    assert dr.event(event_id).status == Status.COMPLETED


def test_a_cancelled_event_takes_a_new_modification_number_and_refuses_opt_outs(dr: DemandResponse) -> None:
    start = -(-(dr.billing.now() + 2 * HOUR) // PERIOD_SECONDS) * PERIOD_SECONDS
    meter = Account.create()
    event_id = dr.create_event("dfs", Terms(start, HOUR, 0, Signal.LEVEL, 3, RATE), meters=[meter.address])
    receipt = dr.cancel_event(event_id)
    assert [(e.args.id, e.args.modification)
            for e in dr.contract.events.DemandResponseCancelled().process_receipt(receipt)] == [(event_id, 1)]
    assert dr.event(event_id).status == Status.CANCELLED
    terms = dr.event(event_id).terms
    signature = sign_optout(bytes(meter.key), dr.deployment.demand_response_domain, event_id, 1, terms)
    with pytest.raises(ChainError) as err:
        dr.opt_out(event_id, meter.address, 1, signature)
    assert error_of(err) == f"EventCancelled({event_id})"


def test_bad_terms_and_targets_are_refused(dr: DemandResponse) -> None:
    start = -(-(dr.billing.now() + 2 * HOUR) // PERIOD_SECONDS) * PERIOD_SECONDS
    meter = Account.create().address
    with pytest.raises(ChainError) as err:
        dr.create_event("dfs", Terms(start + 60, HOUR, 0, Signal.LEVEL, 1, RATE), meters=[meter])
    assert error_of(err) == f"InvalidTerms({start + 60}, {HOUR}, 0, 1)"
    with pytest.raises(ChainError) as err:
        dr.create_event("dfs", Terms(start, HOUR, 0, Signal.LEVEL, 4, RATE), meters=[meter])
    assert error_of(err) == f"InvalidTerms({start}, {HOUR}, 0, 4)"
    with pytest.raises(ChainError) as err:
        dr.create_event("dfs", Terms(start, HOUR, 0, Signal.LEVEL, 1, RATE), regions=["north"], meters=[meter])
    assert error_of(err) == "InvalidTarget(1, 1)"
    with pytest.raises(ChainError) as err:  # the settler's key cannot raise events
        call = dr.contract.functions.createEvent(text32("x"), Terms(start, HOUR, 0, 0, 1, RATE).as_struct(), [],
                                                 [meter])
        dr.client.transact(dr.settings.operator_key, call)
    assert "AccessControlUnauthorizedAccount" in str(err.value)


def test_an_opt_out_is_the_meters_signature_and_is_refused_at_the_start(dr: DemandResponse) -> None:
    scene = make_scene(dr, history=False)
    a, b, c = scene.meters
    domain = dr.deployment.demand_response_domain
    stranger = Account.create()

    forged = sign_optout(bytes(stranger.key), domain, scene.event_id, 0, scene.terms)
    with pytest.raises(ChainError) as err:
        dr.opt_out(scene.event_id, c.address, 0, forged)
    assert error_of(err).startswith(f"BadSignature({c.address.lower()}, ")
    with pytest.raises(ChainError) as err:  # signed by its own key, but not in the event's region
        dr.opt_out(scene.event_id, stranger.address, 0, forged)
    assert error_of(err) == f"NotTargeted({scene.event_id}, {stranger.address.lower()})"

    signature = sign_optout(bytes(c.key), domain, scene.event_id, 0, scene.terms)
    assert recover_optout_signer(domain, c.address, scene.event_id, 0, scene.terms, signature) == c.address
    receipt = dr.opt_out(scene.event_id, c.address, 0, signature)
    assert [(e.args.meter, e.args.eventId, e.args.modification)
            for e in dr.contract.events.OptedOut().process_receipt(receipt)] == [(c.address, scene.event_id, 0)]
    assert dr.participation(scene.event_id, c.address) == Participation.OPTED_OUT
    with pytest.raises(ChainError) as err:
        dr.opt_out(scene.event_id, c.address, 0, signature)
    assert error_of(err) == f"AlreadyOptedOut({scene.event_id}, {c.address.lower()})"

    scene.advance_to(scene.terms.start)
    late = sign_optout(bytes(b.key), domain, scene.event_id, 0, scene.terms)
    with pytest.raises(ChainError) as err:
        dr.opt_out(scene.event_id, b.address, 0, late)
    assert error_of(err).startswith(f"EventStarted({scene.event_id}, {scene.terms.start}, ")
    assert dr.participation(scene.event_id, b.address) == Participation.NONE


def test_a_meter_that_opted_out_gets_no_credit_and_credits_go_on_the_open_period(dr: DemandResponse) -> None:
    scene = make_scene(dr, history=False)
    a, b, c = scene.meters
    dr.opt_out(scene.event_id, c.address, 0, sign_optout(bytes(c.key), dr.deployment.demand_response_domain,
                                                         scene.event_id, 0, scene.terms))
    with pytest.raises(ChainError) as err:  # not completed yet
        dr.credit(scene.event_id, [(a.address, 500, 100)])
    assert error_of(err).startswith(f"EventNotCompleted({scene.event_id}, {scene.terms.end}, ")

    scene.advance_to(scene.terms.end + HOUR)
    with pytest.raises(ChainError) as err:
        dr.credit(scene.event_id, [(a.address, 500, 100), (c.address, 500, 0)])
    assert error_of(err) == f"MeterOptedOut({scene.event_id}, {c.address.lower()})"
    with pytest.raises(ChainError) as err:  # the grid operator may not credit
        call = dr.contract.functions.credit(scene.event_id, [(a.address, 500, 100)])
        dr.client.transact(dr.settings.grid_operator_key, call)
    assert "AccessControlUnauthorizedAccount" in str(err.value)

    receipt = dr.credit(scene.event_id, [(a.address, 500, 100), (b.address, 500, 600)])
    applied = [(e.args.meter, e.args.eventId, e.args.periodId, e.args.baselineWh, e.args.actualWh, e.args.amount)
               for e in dr.contract.events.CreditApplied().process_receipt(receipt)]
    assert applied == [(a.address, scene.event_id, 1, 500, 100, 400 * RATE),
                       (b.address, scene.event_id, 1, 500, 600, 0)]
    assert dr.credit_of(a.address, 1) == 400 * RATE
    assert dr.credit_of(c.address, 1) == 0
    with pytest.raises(ChainError) as err:
        dr.credit(scene.event_id, [(a.address, 500, 100)])
    assert error_of(err) == f"AlreadyCredited({scene.event_id}, {a.address.lower()})"


def test_deploy_records_the_contract_with_its_roles_and_the_billing_contract_it_reads(dr: DemandResponse) -> None:
    fn = dr.contract.functions
    assert fn.billing().call() == dr.deployment.address
    operator = Account.from_key(dr.settings.operator_key).address
    grid = Account.from_key(dr.settings.grid_operator_key).address
    assert fn.hasRole(fn.SETTLER_ROLE().call(), operator).call()
    assert fn.hasRole(fn.GRID_OPERATOR_ROLE().call(), grid).call()
    assert not fn.hasRole(fn.SETTLER_ROLE().call(), grid).call()
    assert fn.domainSeparator().call() == dr.deployment.demand_response_domain.separator()


def test_an_opt_out_holds_only_for_the_terms_it_signed_and_a_change_lapses_it(dr: DemandResponse) -> None:
    scene = make_scene(dr, history=False)
    a, b, c = scene.meters
    domain = dr.deployment.demand_response_domain
    first = sign_optout(bytes(c.key), domain, scene.event_id, 0, scene.terms)
    dr.opt_out(scene.event_id, c.address, 0, first)
    with pytest.raises(ChainError) as err:  # the same id and modification with other terms: another event
        dr.opt_out(scene.event_id, b.address, 0,
                   sign_optout(bytes(b.key), domain, scene.event_id, 0, replace(scene.terms, signal_value=3)))
    assert error_of(err).startswith(f"BadSignature({b.address.lower()}, ")

    later = replace(scene.terms, start=scene.terms.start + PERIOD_SECONDS)
    dr.modify_event(scene.event_id, later)
    assert dr.participation(scene.event_id, c.address) == Participation.NONE  # it signed the old terms
    with pytest.raises(ChainError) as err:  # replayed after the change
        dr.opt_out(scene.event_id, c.address, 0, first)
    assert error_of(err) == f"StaleModification({scene.event_id}, 0, 1)"
    with pytest.raises(ChainError) as err:  # the new number over the old terms
        dr.opt_out(scene.event_id, c.address, 1, sign_optout(bytes(c.key), domain, scene.event_id, 1, scene.terms))
    assert error_of(err).startswith(f"BadSignature({c.address.lower()}, ")
    receipt = dr.opt_out(scene.event_id, c.address, 1, sign_optout(bytes(c.key), domain, scene.event_id, 1, later))
    assert [e.args.modification for e in dr.contract.events.OptedOut().process_receipt(receipt)] == [1]
    assert dr.participation(scene.event_id, c.address) == Participation.OPTED_OUT

    dr.opt_out(scene.event_id, b.address, 1, sign_optout(bytes(b.key), domain, scene.event_id, 1, later))
    dr.modify_event(scene.event_id, replace(later, signal_value=3))  # b's opt-out lapses: it is credited
    scene.advance_to(later.end + HOUR)
    receipt = dr.credit(scene.event_id, [(b.address, 500, 100)])
    assert [e.args.amount for e in dr.contract.events.CreditApplied().process_receipt(receipt)] == [400 * RATE]


def test_a_meter_withdraws_its_opt_out_before_the_start_and_neither_signature_replays(dr: DemandResponse) -> None:
    scene = make_scene(dr, history=False)
    a, b, c = scene.meters
    domain = dr.deployment.demand_response_domain
    withdrawal = sign_optout(bytes(c.key), domain, scene.event_id, 0, scene.terms, withdrawal=True)
    with pytest.raises(ChainError) as err:
        dr.opt_out(scene.event_id, c.address, 0, withdrawal, withdrawal=True)
    assert error_of(err) == f"NotOptedOut({scene.event_id}, {c.address.lower()})"
    opt_out = sign_optout(bytes(c.key), domain, scene.event_id, 0, scene.terms)
    with pytest.raises(ChainError) as err:  # an opt-out's signature is no withdrawal's
        dr.opt_out(scene.event_id, c.address, 0, opt_out, withdrawal=True)
    assert error_of(err).startswith(f"BadSignature({c.address.lower()}, ")

    dr.opt_out(scene.event_id, c.address, 0, opt_out)
    receipt = dr.opt_out(scene.event_id, c.address, 0, withdrawal, withdrawal=True)
    assert [(e.args.meter, e.args.eventId, e.args.modification)
            for e in dr.contract.events.OptOutWithdrawn().process_receipt(receipt)] == [(c.address, scene.event_id, 0)]
    assert dr.participation(scene.event_id, c.address) == Participation.WITHDRAWN
    with pytest.raises(ChainError) as err:  # the opt-out replayed cannot undo the withdrawal
        dr.opt_out(scene.event_id, c.address, 0, opt_out)
    assert error_of(err) == f"OptOutWasWithdrawn({scene.event_id}, {c.address.lower()})"
    with pytest.raises(ChainError) as err:
        dr.opt_out(scene.event_id, c.address, 0, withdrawal, withdrawal=True)
    assert error_of(err) == f"NotOptedOut({scene.event_id}, {c.address.lower()})"

    dr.opt_out(scene.event_id, b.address, 0, sign_optout(bytes(b.key), domain, scene.event_id, 0, scene.terms))
    scene.advance_to(scene.terms.start)
    with pytest.raises(ChainError) as err:
        dr.opt_out(scene.event_id, b.address, 0,
                   sign_optout(bytes(b.key), domain, scene.event_id, 0, scene.terms, withdrawal=True), withdrawal=True)
    assert error_of(err).startswith(f"EventStarted({scene.event_id}, {scene.terms.start}, ")
    scene.advance_to(scene.terms.end + HOUR)
    receipt = dr.credit(scene.event_id, [(c.address, 500, 100)])  # it took part after all
    assert [e.args.amount for e in dr.contract.events.CreditApplied().process_receipt(receipt)] == [400 * RATE]
    with pytest.raises(ChainError) as err:
        dr.credit(scene.event_id, [(b.address, 500, 100)])
    assert error_of(err) == f"MeterOptedOut({scene.event_id}, {b.address.lower()})"


def test_a_change_must_name_the_events_own_target_and_logs_it(dr: DemandResponse) -> None:
    scene = make_scene(dr, history=False)
    later = replace(scene.terms, signal_value=3)
    call = dr.contract.functions.modifyEvent(scene.event_id, later.as_struct(), [text32("elsewhere")], [])
    with pytest.raises(ChainError) as err:
        dr.client.transact(dr.settings.grid_operator_key, call)
    assert error_of(err) == f"TargetMismatch({scene.event_id})"
    receipt = dr.modify_event(scene.event_id, later)
    logged = dr.contract.events.DemandResponseEvent().process_receipt(receipt)
    assert [(e.args.regions, e.args.meters) for e in logged] == [([text32(REGION)], [])]


def test_a_baseline_above_what_the_supply_can_deliver_over_the_window_is_refused(dr: DemandResponse) -> None:
    scene = make_scene(dr, history=False)
    a, b, c = scene.meters
    max_power_w = dr.billing.contract.functions.maxPowerW().call()
    bound = max_power_w * scene.terms.duration // HOUR
    assert dr.max_power_w() == max_power_w
    assert dr.contract.functions.creditBoundWh(scene.event_id).call() == bound
    scene.advance_to(scene.terms.end + HOUR)
    with pytest.raises(ChainError) as err:  # a settler key crediting a made-up baseline
        dr.credit(scene.event_id, [(a.address, 500, 100), (b.address, 10**12, 0)])
    assert error_of(err) == f"CreditAboveBound({scene.event_id}, {b.address.lower()}, {10**12}, {bound})"
    with pytest.raises(ChainError) as err:
        dr.credit(scene.event_id, [(b.address, bound + 1, 0)])
    assert error_of(err) == f"CreditAboveBound({scene.event_id}, {b.address.lower()}, {bound + 1}, {bound})"
    receipt = dr.credit(scene.event_id, [(b.address, bound, 0)])
    assert [e.args.amount for e in dr.contract.events.CreditApplied().process_receipt(receipt)] == [bound * RATE]
