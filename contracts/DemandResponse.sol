// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IMeterBilling} from "./IMeterBilling.sol";

/// @title DemandResponse
/// @notice Demand-response events after OpenADR 2.0b's model, meter-signed opt-outs and the credits paid
/// for measured reductions, each recorded against the meter's open billing period in SmartMeterBilling.
/// @dev An event has an id and a modification number (a changed event keeps its id, the number goes up),
/// a programme name, a notice time (when it was last announced), an active period (start, duration, both
/// on settlement-period boundaries), a ramp-up (how long before the start it is "near"), a signal (a level
/// 0-3 or a price in millipence per kWh), the programme's credit rate (millipence per kWh of reduction)
/// and a target: regions (a meter is targeted when its region in SmartMeterBilling is listed) or meters.
/// Its status (far / near / active / completed / cancelled) follows from the block's time.
///
/// A meter opts out with its EIP-712 signature of the event's id, modification number and terms, so an
/// opt-out holds only for the terms it was signed for: a change of the event (a higher modification) lapses
/// it, and a signature made for another event or other terms never verifies. Before the start a meter may
/// withdraw its opt-out of the current terms, signed the same way; it cannot then opt out of the same terms
/// again (so neither signature can be replayed to undo the other), only of changed ones.
///
/// Credits are computed off chain from on-chain readings only (the baseline method is in README.md), and
/// the settler submits each meter's baseline and actual energy; the contract prices the reduction at the
/// event's credit rate (Wh x millipence/kWh = micropence, exact) and adds it to the meter's open period.
/// A baseline above what the supply can deliver over the window (`maxPowerW` for its duration, the billing
/// contract's plausibility bound) is refused, so no credit exceeds that energy at the event's rate.
/// A bill's amount payable is SmartMeterBilling's `BillIssued.amountDue` minus `creditOf(meter, period)`.
contract DemandResponse is AccessControl, EIP712 {
    /// @notice Raises, changes and cancels events (the same role name as in SmartMeterBilling).
    bytes32 public constant GRID_OPERATOR_ROLE = keccak256("GRID_OPERATOR_ROLE");
    /// @notice Records the credits of completed events.
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    /// @notice EIP-712 type hash of an event's terms, as opt-outs and their withdrawals sign them.
    bytes32 public constant TERMS_TYPEHASH = keccak256(
        "Terms(uint32 start,uint32 duration,uint32 rampUp,uint8 signalKind,uint32 signalValue,uint32 creditRate)"
    );
    /// @notice EIP-712 type hash of a meter's opt-out of an event's current terms.
    bytes32 public constant OPT_OUT_TYPEHASH = keccak256(
        "OptOut(address meter,uint64 eventId,uint32 modification,Terms terms)"
        "Terms(uint32 start,uint32 duration,uint32 rampUp,uint8 signalKind,uint32 signalValue,uint32 creditRate)"
    );
    /// @notice EIP-712 type hash of a meter's withdrawal of its opt-out of an event's current terms.
    bytes32 public constant OPT_OUT_WITHDRAWAL_TYPEHASH = keccak256(
        "OptOutWithdrawal(address meter,uint64 eventId,uint32 modification,Terms terms)"
        "Terms(uint32 start,uint32 duration,uint32 rampUp,uint8 signalKind,uint32 signalValue,uint32 creditRate)"
    );

    /// @notice Seconds in a settlement period (event windows start and last whole periods).
    uint256 public constant PERIOD_SECONDS = 1800;
    /// @notice Most regions or meters an event targets.
    uint256 public constant MAX_TARGETS = 250;
    /// @notice Most credits one `credit` call records.
    uint256 public constant MAX_CREDITS = 250;
    /// @notice Highest signal level (OpenADR's simple signal: 0 normal .. 3 special).
    uint8 public constant MAX_LEVEL = 3;
    /// @notice Signal kinds: a level 0-3.
    uint8 public constant SIGNAL_LEVEL = 0;
    /// @notice Signal kinds: a price in millipence per kWh for the active period.
    uint8 public constant SIGNAL_PRICE = 1;
    /// @notice Participation states (`participation`): none recorded for the current terms.
    uint8 public constant NONE = 0;
    /// @notice Participation states: opted out of the current terms.
    uint8 public constant OPTED_OUT = 1;
    /// @notice Participation states: credited (final).
    uint8 public constant CREDITED = 2;
    /// @notice Participation states: withdrew its opt-out of the current terms.
    uint8 public constant WITHDRAWN = 3;
    uint256 private constant SECONDS_PER_HOUR = 3600;

    /// @notice An event's status (OpenADR 2.0b's eiEventStatus).
    enum Status {
        Far,
        Near,
        Active,
        Completed,
        Cancelled
    }

    /// @notice What an event asks for, when, and what it pays.
    struct Terms {
        uint32 start;
        uint32 duration;
        uint32 rampUp;
        uint8 signalKind;
        uint32 signalValue;
        uint32 creditRate;
    }

    /// @dev An event's state: its terms and bookkeeping.
    struct DrEvent {
        Terms terms;
        bytes32 programme;
        uint32 modification;
        uint32 noticeAt;
        bool cancelled;
        bool byMeter;
        bytes32 targetHash;
    }

    /// @dev A meter's part in an event: a participation state and the modification an opt-out or a
    /// withdrawal was signed for (one that is not the event's current one has lapsed: NONE).
    struct Part {
        uint8 state;
        uint32 modification;
    }

    /// @notice One meter's measured response to a completed event, as the settler submits it.
    struct Credit {
        address meter;
        uint64 baselineWh;
        uint64 actualWh;
    }

    /// @notice The billing contract whose meters and open periods credits refer to.
    IMeterBilling public immutable billing;
    /// @notice The billing contract's plausibility bound on supply power (W), which bounds every baseline.
    uint256 public immutable maxPowerW;

    mapping(uint64 id => DrEvent) private _events;
    mapping(uint64 id => mapping(bytes32 target => bool)) private _targeted;
    mapping(uint64 id => mapping(address meter => Part)) private _participation;
    mapping(address meter => mapping(uint32 periodId => uint256 micropence)) private _credits;
    uint64 private _lastId;

    /// @notice Emitted when an event is created (modification 0) or changed (a higher modification, the
    /// same target); `regions` or `meters` (one of them empty) is its target.
    event DemandResponseEvent(
        uint64 indexed id,
        uint32 modification,
        bytes32 programme,
        uint64 noticeAt,
        Terms terms,
        bytes32[] regions,
        address[] meters
    );
    /// @notice Emitted when an event is cancelled (with its new modification number).
    event DemandResponseCancelled(uint64 indexed id, uint32 modification);
    /// @notice Emitted when a meter opts out of an event's terms (its `modification`) with its signature.
    event OptedOut(address indexed meter, uint64 indexed eventId, uint32 modification);
    /// @notice Emitted when a meter withdraws its opt-out of an event's terms (its `modification`), signed.
    event OptOutWithdrawn(address indexed meter, uint64 indexed eventId, uint32 modification);
    /// @notice Emitted for each credit: the measured energies and the amount added to the open period.
    event CreditApplied(
        address indexed meter, uint64 indexed eventId, uint32 periodId, uint64 baselineWh, uint64 actualWh, uint64 amount
    );

    /// @notice Thrown when an address argument is zero.
    error ZeroAddress();
    /// @notice Thrown when an event id was never issued.
    error UnknownEvent(uint64 id);
    /// @notice Thrown when the terms are impossible: start not ahead, not on period boundaries, empty, a
    /// level above 3, or a signal kind unknown.
    error InvalidTerms(uint32 start, uint32 duration, uint8 signalKind, uint32 signalValue);
    /// @notice Thrown when an event would target nothing, too much, or both regions and meters.
    error InvalidTarget(uint256 regions, uint256 meters);
    /// @notice Thrown when changing, cancelling or opting out of an event that has started (`at` is the time).
    error EventStarted(uint64 id, uint64 start, uint64 at);
    /// @notice Thrown when crediting an event that has not completed.
    error EventNotCompleted(uint64 id, uint64 end, uint64 at);
    /// @notice Thrown when changing, opting out of or crediting a cancelled event.
    error EventCancelled(uint64 id);
    /// @notice Thrown when an opt-out's signature is not the meter's.
    error BadSignature(address meter, address signer);
    /// @notice Thrown when a meter is not among an event's targets.
    error NotTargeted(uint64 id, address meter);
    /// @notice Thrown when a meter that opted out already opts out again.
    error AlreadyOptedOut(uint64 id, address meter);
    /// @notice Thrown when an opt-out or withdrawal was signed for another modification than the current one.
    error StaleModification(uint64 id, uint32 signed, uint32 current);
    /// @notice Thrown when withdrawing an opt-out the meter has not made (of the current terms).
    error NotOptedOut(uint64 id, address meter);
    /// @notice Thrown when opting out of terms the meter withdrew an opt-out of.
    error OptOutWasWithdrawn(uint64 id, address meter);
    /// @notice Thrown when `modifyEvent` is not given the event's own target lists.
    error TargetMismatch(uint64 id);
    /// @notice Thrown when a baseline exceeds what the supply can deliver over the event's window
    /// (`maxPowerW` for its duration): no credit can be above that energy at the event's rate.
    error CreditAboveBound(uint64 id, address meter, uint64 baselineWh, uint256 boundWh);
    /// @notice Thrown when crediting a meter that opted out of the event.
    error MeterOptedOut(uint64 id, address meter);
    /// @notice Thrown when crediting a meter twice for one event.
    error AlreadyCredited(uint64 id, address meter);
    /// @notice Thrown when a credit batch is empty or larger than `MAX_CREDITS`.
    error BadBatchSize(uint256 size, uint256 max);

    /// @param admin Holds DEFAULT_ADMIN_ROLE and can grant the other roles.
    /// @param billing_ The SmartMeterBilling deployment.
    constructor(address admin, IMeterBilling billing_) EIP712("DemandResponse", "1") {
        if (admin == address(0) || address(billing_) == address(0)) revert ZeroAddress();
        billing = billing_;
        maxPowerW = billing_.maxPowerW();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ------------------------------------------------------------------ events

    /// @notice Announces a demand-response event to regions or to listed meters.
    /// @param programme The programme's name (short text, right-padded).
    /// @param terms When the event runs, its signal and its credit rate.
    /// @param regions Target regions (empty when `meters` is given).
    /// @param meters Target meters (empty when `regions` is given).
    /// @return id The new event's id.
    function createEvent(bytes32 programme, Terms calldata terms, bytes32[] calldata regions, address[] calldata meters)
        external
        onlyRole(GRID_OPERATOR_ROLE)
        returns (uint64 id)
    {
        _checkTerms(terms);
        bool byMeter = meters.length > 0;
        if ((regions.length > 0) == byMeter || regions.length + meters.length > MAX_TARGETS) {
            revert InvalidTarget(regions.length, meters.length);
        }
        id = ++_lastId;
        DrEvent storage e = _events[id];
        e.terms = terms;
        e.programme = programme;
        e.noticeAt = uint32(block.timestamp);
        e.byMeter = byMeter;
        e.targetHash = keccak256(abi.encode(regions, meters));
        for (uint256 i = 0; i < regions.length; ++i) {
            _targeted[id][regions[i]] = true;
        }
        for (uint256 i = 0; i < meters.length; ++i) {
            _targeted[id][bytes32(uint256(uint160(meters[i])))] = true;
        }
        emit DemandResponseEvent(id, 0, programme, uint64(block.timestamp), terms, regions, meters);
    }

    /// @notice Changes an event before it starts: same id and target, new terms, modification + 1. Opt-outs
    /// of the old terms lapse (each meter may opt out of the new ones).
    /// @dev The target is not stored as lists (only as a membership map and their hash), so the caller
    /// passes the lists it was created with (its creation log has them), checked against the hash, and the
    /// event carries them as its NatSpec says.
    /// @param id The event.
    /// @param terms The new terms.
    /// @param regions The event's target regions, exactly as created.
    /// @param meters The event's target meters, exactly as created.
    function modifyEvent(uint64 id, Terms calldata terms, bytes32[] calldata regions, address[] calldata meters)
        external
        onlyRole(GRID_OPERATOR_ROLE)
    {
        DrEvent storage e = _beforeStart(id);
        _checkTerms(terms);
        if (keccak256(abi.encode(regions, meters)) != e.targetHash) revert TargetMismatch(id);
        e.terms = terms;
        e.noticeAt = uint32(block.timestamp);
        uint32 modification = ++e.modification;
        emit DemandResponseEvent(id, modification, e.programme, uint64(block.timestamp), terms, regions, meters);
    }

    /// @notice Cancels an event before it starts (modification + 1).
    /// @param id The event.
    function cancelEvent(uint64 id) external onlyRole(GRID_OPERATOR_ROLE) {
        DrEvent storage e = _beforeStart(id);
        e.cancelled = true;
        uint32 modification = ++e.modification;
        emit DemandResponseCancelled(id, modification);
    }

    // ------------------------------------------------------------------ opt-out

    /// @notice Records a meter's signed opt-out of an event's current terms; anyone (the gateway) may relay it.
    /// @param id The event.
    /// @param meter The meter opting out.
    /// @param modification The event's modification number the meter signed (the current one).
    /// @param signature The meter's EIP-712 signature of `OptOut(meter, id, modification, terms)` (65 bytes,
    /// low s), `terms` being the event's current terms.
    function optOut(uint64 id, address meter, uint32 modification, bytes calldata signature) external {
        _signedBefore(OPT_OUT_TYPEHASH, id, meter, modification, signature);
        Part storage part = _participation[id][meter];
        uint8 state = _stateOf(part, modification);
        if (state == OPTED_OUT) revert AlreadyOptedOut(id, meter);
        if (state == WITHDRAWN) revert OptOutWasWithdrawn(id, meter);
        part.state = OPTED_OUT;
        part.modification = modification;
        emit OptedOut(meter, id, modification);
    }

    /// @notice Withdraws a meter's opt-out of an event's current terms before the start, with its signature;
    /// anyone may relay it. The meter takes part again and cannot opt out of these terms again.
    /// @param id The event.
    /// @param meter The meter withdrawing its opt-out.
    /// @param modification The event's modification number the meter signed (the current one).
    /// @param signature The meter's EIP-712 signature of `OptOutWithdrawal(meter, id, modification, terms)`.
    function withdrawOptOut(uint64 id, address meter, uint32 modification, bytes calldata signature) external {
        _signedBefore(OPT_OUT_WITHDRAWAL_TYPEHASH, id, meter, modification, signature);
        Part storage part = _participation[id][meter];
        if (_stateOf(part, modification) != OPTED_OUT) revert NotOptedOut(id, meter);
        part.state = WITHDRAWN;
        emit OptOutWithdrawn(meter, id, modification);
    }

    // ------------------------------------------------------------------ credits

    /// @notice Records the measured response of many meters to a completed event and credits each
    /// reduction (baseline minus actual, none when actual is higher) at the event's rate to the meter's
    /// open billing period.
    /// @param id The event.
    /// @param credits Each meter's baseline and actual energy over the event's window, in Wh; a baseline is
    /// at most `creditBoundWh(id)`.
    function credit(uint64 id, Credit[] calldata credits) external onlyRole(SETTLER_ROLE) {
        DrEvent storage e = _known(id);
        if (e.cancelled) revert EventCancelled(id);
        uint256 end = uint256(e.terms.start) + e.terms.duration;
        if (block.timestamp < end) revert EventNotCompleted(id, uint64(end), uint64(block.timestamp));
        if (credits.length == 0 || credits.length > MAX_CREDITS) revert BadBatchSize(credits.length, MAX_CREDITS);
        uint256 rate = e.terms.creditRate;
        uint32 modification = e.modification;
        uint256 bound = maxPowerW * e.terms.duration / SECONDS_PER_HOUR;
        for (uint256 i = 0; i < credits.length; ++i) {
            Credit calldata c = credits[i];
            if (c.baselineWh > bound) revert CreditAboveBound(id, c.meter, c.baselineWh, bound);
            if (!_isTargeted(id, c.meter)) revert NotTargeted(id, c.meter);
            Part storage part = _participation[id][c.meter];
            uint8 state = _stateOf(part, modification);
            if (state == OPTED_OUT) revert MeterOptedOut(id, c.meter);
            if (state == CREDITED) revert AlreadyCredited(id, c.meter);
            part.state = CREDITED;
            (uint32 periodId,,,,,,,,) = billing.openBill(c.meter);
            uint256 amount = c.baselineWh > c.actualWh ? (c.baselineWh - c.actualWh) * rate : 0;
            _credits[c.meter][periodId] += amount;
            emit CreditApplied(c.meter, id, periodId, c.baselineWh, c.actualWh, SafeCast.toUint64(amount));
        }
    }

    // ------------------------------------------------------------------ internals

    function _known(uint64 id) private view returns (DrEvent storage e) {
        e = _events[id];
        if (e.terms.duration == 0) revert UnknownEvent(id);
    }

    function _beforeStart(uint64 id) private view returns (DrEvent storage e) {
        e = _known(id);
        if (e.cancelled) revert EventCancelled(id);
        if (block.timestamp >= e.terms.start) revert EventStarted(id, e.terms.start, uint64(block.timestamp));
    }

    /// @dev The checks an opt-out and a withdrawal share: an event not started, its current modification, the
    /// meter's signature of `typeHash` over the event's current terms, and a targeted meter.
    function _signedBefore(bytes32 typeHash, uint64 id, address meter, uint32 modification, bytes calldata signature)
        private
        view
        returns (DrEvent storage e)
    {
        e = _beforeStart(id);
        if (modification != e.modification) revert StaleModification(id, modification, e.modification);
        Terms storage t = e.terms;
        bytes32 termsHash = keccak256(
            abi.encode(TERMS_TYPEHASH, t.start, t.duration, t.rampUp, t.signalKind, t.signalValue, t.creditRate)
        );
        address signer = ECDSA.recover(
            _hashTypedDataV4(keccak256(abi.encode(typeHash, meter, id, modification, termsHash))), signature
        );
        if (signer != meter) revert BadSignature(meter, signer);
        if (!_isTargeted(id, meter)) revert NotTargeted(id, meter);
    }

    /// @dev A part's state for the event's current modification: an opt-out or withdrawal of older terms
    /// has lapsed (NONE); a credit is final.
    function _stateOf(Part storage part, uint32 modification) private view returns (uint8) {
        uint8 state = part.state;
        if (state == CREDITED || part.modification == modification) return state;
        return NONE;
    }

    function _checkTerms(Terms calldata t) private view {
        bool bad = t.start <= block.timestamp || t.start % PERIOD_SECONDS != 0 || t.duration == 0
            || t.duration % PERIOD_SECONDS != 0 || t.signalKind > SIGNAL_PRICE
            || (t.signalKind == SIGNAL_LEVEL && t.signalValue > MAX_LEVEL);
        if (bad) revert InvalidTerms(t.start, t.duration, t.signalKind, t.signalValue);
    }

    function _isTargeted(uint64 id, address meter) private view returns (bool) {
        if (_events[id].byMeter) return _targeted[id][bytes32(uint256(uint160(meter)))];
        (bool registered,,, bytes32 region,,,,) = billing.meterState(meter);
        return registered && _targeted[id][region];
    }

    // ------------------------------------------------------------------ views

    /// @notice An event's terms and state.
    /// @param id The event.
    /// @return terms Its terms.
    /// @return programme Its programme's name.
    /// @return modification Its modification number (0 as created).
    /// @return noticeAt When it was last announced.
    /// @return status Its status now.
    function eventOf(uint64 id)
        external
        view
        returns (Terms memory terms, bytes32 programme, uint32 modification, uint64 noticeAt, Status status)
    {
        DrEvent storage e = _known(id);
        return (e.terms, e.programme, e.modification, e.noticeAt, statusOf(id));
    }

    /// @notice An event's status at the block's time (OpenADR: far, near, active, completed, cancelled).
    /// @param id The event.
    /// @return The status.
    function statusOf(uint64 id) public view returns (Status) {
        DrEvent storage e = _known(id);
        if (e.cancelled) return Status.Cancelled;
        uint256 start = e.terms.start;
        if (block.timestamp >= start + e.terms.duration) return Status.Completed;
        if (block.timestamp >= start) return Status.Active;
        if (block.timestamp + e.terms.rampUp >= start) return Status.Near;
        return Status.Far;
    }

    /// @notice How many events were ever created (ids run from 1).
    /// @return The count.
    function eventCount() external view returns (uint64) {
        return _lastId;
    }

    /// @notice Whether an event targets a meter (by its region or by name).
    /// @param id The event.
    /// @param meter The meter.
    /// @return True when targeted.
    function isTargeted(uint64 id, address meter) external view returns (bool) {
        _known(id);
        return _isTargeted(id, meter);
    }

    /// @notice A meter's participation in an event's current terms: 0 none yet (an opt-out of older terms
    /// has lapsed), 1 opted out, 2 credited, 3 withdrew its opt-out.
    /// @param id The event.
    /// @param meter The meter.
    /// @return The state.
    function participation(uint64 id, address meter) external view returns (uint8) {
        return _stateOf(_participation[id][meter], _events[id].modification);
    }

    /// @notice The most a baseline (hence a reduction) may be for an event, in Wh: `maxPowerW` over its
    /// duration, rounded down.
    /// @param id The event.
    /// @return The bound.
    function creditBoundWh(uint64 id) external view returns (uint256) {
        return maxPowerW * _known(id).terms.duration / SECONDS_PER_HOUR;
    }

    /// @notice The demand-response credits recorded against a meter's billing period, in micropence.
    /// @param meter The meter.
    /// @param periodId The billing period (SmartMeterBilling's numbering).
    /// @return The total.
    function creditOf(address meter, uint32 periodId) external view returns (uint256) {
        return _credits[meter][periodId];
    }

    /// @notice The EIP-712 domain separator meters sign opt-outs under.
    /// @return The separator for this chain and this deployment.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }
}
