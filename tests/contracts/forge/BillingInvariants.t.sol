// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {SmartMeterBilling} from "../../../contracts/SmartMeterBilling.sol";
import {DemandResponse} from "../../../contracts/DemandResponse.sol";
import {BillingFixture} from "./Base.sol";
import {Vm} from "./Vm.sol";

/// @title BillingHandler
/// @notice What forge's invariant campaign calls: meters' readings (good and faulty), meter exchanges and
/// register resets, tariff versions (added and withdrawn), day-ahead prices, closed periods and settled
/// demand-response events, in random order, with a ghost of what each meter's figures must be. Each action checks what it can at once (a `require` failing
/// here fails the campaign: fail_on_revert) and the invariants check the rest after every call.
contract BillingHandler is BillingFixture {
    /// @dev Issue 24 item 5: `credit` refuses a baseline above max power x window (`CreditAboveBound`). The
    /// handler asks for baselines up to twice the bound and requires each one above it to be refused.
    bool internal constant CREDIT_BOUND_ENFORCED = true;

    uint256 internal constant METERS = 3;
    uint256 internal constant MAX_GAP = 2 days;
    uint256 internal constant MAX_RATE = 100_000;
    uint256 internal constant MAX_VERSIONS = 8;
    uint256 internal constant MAX_SNAPSHOTS = 400;

    /// @notice What a meter's figures must be, by the readings the handler saw recorded.
    struct Ghost {
        uint256 seq;
        uint256 ts;
        uint256 imp;
        uint256 exp;
        uint256 cost;
        uint256 credit;
        uint256 periodStart;
        uint32 periodId;
        /// @dev Readings recorded plus readings refused for their content (each uses its seq up) since the
        /// meter's last restart (registration, exchange or register reset): with no gap, its last seq.
        uint256 counted;
    }

    Ghost[METERS] internal ghosts;
    /// @notice The key index (`_key`) of the meter in each slot: an exchange puts a new meter in the slot.
    uint256[METERS] internal keyIndex;
    uint256 public exchanges;
    uint256 public resets;
    /// @notice Periods some recorded reading covered, with the prices they were charged at (import << 32 | export).
    uint256[] public pricedPeriods;
    mapping(uint256 period => uint256 prices) public pricedAt;
    /// @notice Demand-response credits the contract applied above max power x window x rate.
    uint256 public creditsOverBound;
    uint256 public creditsApplied;
    uint256 public readingsRecorded;
    mapping(address meter => mapping(uint32 periodId => uint256 micropence)) public ghostCredit;

    constructor() {
        _deploy();
        for (uint256 i = 0; i < METERS; ++i) {
            billing.registerMeter(vm.addr(_key(i)), bytes32(i), bytes32("north"), uint64(1_000 * i), 0);
            ghosts[i] = Ghost(0, clock, 1_000 * i, 0, 0, 0, clock, 1, 0);
            keyIndex[i] = i;
        }
    }

    function contracts() external view returns (SmartMeterBilling, DemandResponse) {
        return (billing, dr);
    }

    function meter(uint256 i) public view returns (address) {
        return vm.addr(_key(keyIndex[i]));
    }

    function ghost(uint256 i) external view returns (Ghost memory) {
        return ghosts[i];
    }

    function pricedCount() external view returns (uint256) {
        return pricedPeriods.length;
    }

    /// @dev Moves the handler's clock on and sets the block's time to it (each action starts with it,
    /// whether or not forge keeps a warp between calls).
    function _tick(uint256 dt) internal {
        clock += dt;
        vm.warp(clock);
    }

    // ------------------------------------------------------------------ actions

    /// @notice A meter's next reading, within its plausible power, after up to two days.
    function read(uint256 m, uint256 dt, uint256 importSeed, uint256 exportSeed) external {
        uint256 i = m % METERS;
        _tick(_bound(dt, 1, MAX_GAP));
        Ghost storage g = ghosts[i];
        uint256 t1 = clock;
        uint256 limit = uint256(MAX_POWER_W) * (t1 - g.ts) / 3600;
        uint256 dImport = _bound(importSeed, 0, limit);
        uint256 dExport = _bound(exportSeed, 0, limit);
        (uint256 cost, uint256 credit) = _refSplit(g.ts, t1, dImport, dExport);
        vm.recordLogs();
        billing.submitReadings(_record(_key(keyIndex[i]), g.seq + 1, t1, g.imp + dImport, g.exp + dExport));
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs.length == 1 && logs[0].topics[0] == SmartMeterBilling.ReadingRecorded.selector, "a good reading is recorded");
        uint256 record = abi.decode(logs[0].data, (uint256));
        _eq(uint48(record >> 160), g.cost + cost, "recorded cost: the reference split");
        _eq(record >> 208, g.credit + credit, "recorded credit: the reference split");
        for (uint256 p = g.ts / PERIOD; p * PERIOD < t1; p += 7) _snapshot(p);
        _snapshot((t1 - 1) / PERIOD);
        (uint256 seq, uint256 ts, uint256 imp, uint256 exp) = _state(meter(i));
        require(seq == g.seq + 1 && ts > g.ts && imp >= g.imp && exp >= g.exp, "figures never fall, seq the next");
        (g.seq, g.ts, g.imp, g.exp) = (seq, ts, imp, exp);
        g.cost += cost;
        g.credit += credit;
        ++g.counted;
        ++readingsRecorded;
    }

    /// @notice A faulty reading: a stale seq, a gap or a wrong signature must change nothing; a correctly
    /// signed reading refused for its content (stale time, a falling register, too far ahead, too much
    /// energy) must use its seq up and change nothing else.
    function readBadly(uint256 m, uint256 fault, uint256 dt) external {
        uint256 i = m % METERS;
        _tick(_bound(dt, 1, 3600));
        Ghost storage g = ghosts[i];
        fault %= 7;
        bytes memory r;
        uint256 key = _key(keyIndex[i]);
        SmartMeterBilling.RejectReason reason;
        if (fault == 0) (r, reason) = (_record(key, g.seq, clock, g.imp, g.exp), SmartMeterBilling.RejectReason.StaleSequence);
        if (fault == 1) (r, reason) = (_record(key, g.seq + 1, g.ts, g.imp, g.exp), SmartMeterBilling.RejectReason.StaleTimestamp);
        if (fault == 2 && g.imp > 0) {
            (r, reason) = (_record(key, g.seq + 1, clock, g.imp - 1, g.exp), SmartMeterBilling.RejectReason.RegisterDecreased);
        }
        if ((fault == 2 && g.imp == 0) || fault == 3) {
            (r, reason) = (_record(key, g.seq + 1, clock + SKEW + 1, g.imp, g.exp), SmartMeterBilling.RejectReason.FutureTimestamp);
        }
        if (fault == 4) {
            r = _record(key, g.seq + 1, clock, g.imp + uint256(MAX_POWER_W) * (clock - g.ts) / 3600 + 1, g.exp);
            reason = SmartMeterBilling.RejectReason.ImplausibleDelta;
        }
        if (fault == 5) {
            r = _record(_key(keyIndex[i] + 100), g.seq + 1, clock, g.imp, g.exp);
            address who = meter(i);
            for (uint256 k = 0; k < 20; ++k) r[k] = bytes20(who)[k];
            reason = SmartMeterBilling.RejectReason.BadSignature;
        }
        if (fault == 6) (r, reason) = (_record(key, g.seq + 2, clock, g.imp, g.exp), SmartMeterBilling.RejectReason.SequenceGap);
        vm.recordLogs();
        billing.submitReadings(r);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs.length == 1 && logs[0].topics[0] == SmartMeterBilling.ReadingRejected.selector, "a faulty reading is rejected");
        (, SmartMeterBilling.RejectReason got) = abi.decode(logs[0].data, (uint64, SmartMeterBilling.RejectReason));
        _eq(uint8(got), uint8(reason), "rejection reason");
        bool usesUp = fault >= 1 && fault <= 4;
        (uint256 seq, uint256 ts, uint256 imp, uint256 exp) = _state(meter(i));
        require(seq == (usesUp ? g.seq + 1 : g.seq), "a content refusal uses its seq up, no other refusal moves it");
        require(ts == g.ts && imp == g.imp && exp == g.exp, "a rejected reading changes no register or time");
        if (usesUp) {
            g.seq = seq;
            ++g.counted;
        }
    }

    /// @dev A final read after up to an hour within the plausible power, priced into the ghost's open bill.
    function _finalRead(Ghost storage g, uint256 dt, uint256 importSeed, uint256 exportSeed)
        internal
        returns (uint256 finalImport, uint256 finalExport)
    {
        _tick(_bound(dt, 1, 3600));
        uint256 limit = uint256(MAX_POWER_W) * (clock - g.ts) / 3600;
        uint256 dImport = _bound(importSeed, 0, limit);
        uint256 dExport = _bound(exportSeed, 0, limit);
        (uint256 cost, uint256 credit) = _refSplit(g.ts, clock, dImport, dExport);
        for (uint256 p = g.ts / PERIOD; p * PERIOD < clock; p += 7) _snapshot(p);
        _snapshot((clock - 1) / PERIOD);
        g.cost += cost;
        g.credit += credit;
        return (g.imp + dImport, g.exp + dExport);
    }

    /// @notice A meter exchange: the old meter's final read closes its register, a new meter (key) takes the
    /// slot with its registers at any value (they may be below the old ones) and its sequence at 0.
    function exchange(uint256 m, uint256 dt, uint256 importSeed, uint256 exportSeed, uint40 openImport, uint40 openExport)
        external
    {
        uint256 i = m % METERS;
        Ghost storage g = ghosts[i];
        address old = meter(i);
        (uint256 finalImport, uint256 finalExport) = _finalRead(g, dt, importSeed, exportSeed);
        ++exchanges;
        keyIndex[i] = 1_000 * exchanges + i;
        address fresh = meter(i);
        vm.recordLogs();
        billing.exchangeMeter(old, fresh, uint64(finalImport), uint64(finalExport), uint64(clock), openImport, openExport);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs.length == 1 && logs[0].topics[0] == SmartMeterBilling.MeterExchanged.selector, "exchanged");
        (uint256 finalRecord,,) = abi.decode(logs[0].data, (uint256, uint64, uint64));
        _eq(uint48(finalRecord >> 160), g.cost, "final read's cost: the reference split");
        _eq(finalRecord >> 208, g.credit, "final read's credit: the reference split");
        (g.seq, g.ts, g.imp, g.exp, g.counted) = (0, clock, openImport, openExport, 0);
    }

    /// @notice A register reset: the final read closes the old register, which restarts at any value, and the
    /// sequence at 0; the meter, its time and its open bill go on.
    function reset(uint256 m, uint256 dt, uint256 importSeed, uint256 exportSeed, uint40 importWh, uint40 exportWh)
        external
    {
        uint256 i = m % METERS;
        Ghost storage g = ghosts[i];
        (uint256 finalImport, uint256 finalExport) = _finalRead(g, dt, importSeed, exportSeed);
        vm.recordLogs();
        billing.resetRegister(meter(i), uint64(finalImport), uint64(finalExport), uint64(clock), importWh, exportWh);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs.length == 1 && logs[0].topics[0] == SmartMeterBilling.RegisterReset.selector, "reset");
        (uint256 finalRecord,,) = abi.decode(logs[0].data, (uint256, uint64, uint64));
        _eq(uint32(finalRecord), g.seq, "final read: the old sequence");
        _eq(uint48(finalRecord >> 160), g.cost, "final read's cost: the reference split");
        ++resets;
        (g.seq, g.ts, g.imp, g.exp, g.counted) = (0, clock, importWh, exportWh, 0);
    }

    /// @notice Withdraws the newest tariff version when it starts at least the skew ahead (no reading priced by it).
    function withdrawTariff() external {
        _tick(0);
        uint256 n = refVersions.length;
        if (n == 1 || refVersions[n - 1].from < clock + SKEW) return;
        billing.withdrawTariff(uint32(n));
        _refWithdrawVersion();
    }

    /// @notice A new tariff version (flat, banded or day-ahead on either side) from a boundary far enough ahead.
    function setTariff(uint8 kinds, uint256 rateSeed, uint256 bands, uint16 later) external {
        _tick(0);
        if (refVersions.length >= MAX_VERSIONS) return;
        uint256 from = ((clock + SKEW) / PERIOD + 1 + later % 96) * PERIOD;
        uint256 last = refVersions[refVersions.length - 1].from;
        if (from <= last) from = last + PERIOD * (1 + later % 4);
        SmartMeterBilling.Tariff memory t;
        t.effectiveFrom = uint32(from);
        t.standingCharge = uint32(_bound(rateSeed >> 200, 0, MAX_RATE));
        t.importKind = kinds % 3;
        t.exportKind = (kinds / 3) % 3;
        t.importRate = uint32(_bound(rateSeed, 1, MAX_RATE));
        t.exportRate = uint32(_bound(rateSeed >> 32, 0, MAX_RATE));
        t.importBands = bands % 2 ** 144;
        t.exportBands = (bands >> 100) % 2 ** 144;
        for (uint256 b = 0; b < 8; ++b) {
            t.importBandRates |= _bound(uint256(keccak256(abi.encode(rateSeed, b))), 0, MAX_RATE) << (32 * b);
            t.exportBandRates |= _bound(uint256(keccak256(abi.encode(rateSeed, b, 1))), 0, MAX_RATE) << (32 * b);
        }
        billing.setTariff(t);
        _refAddVersion(t);
    }

    /// @notice Day-ahead prices for up to a day of periods from a boundary far enough ahead.
    function publishDayAhead(uint16 later, uint8 n, uint256 seed) external {
        _tick(0);
        uint256 from = ((clock + SKEW) / PERIOD + 1 + later % 96) * PERIOD;
        n = uint8(_bound(n, 1, 48));
        uint32[] memory imports = new uint32[](n);
        uint32[] memory exports = new uint32[](n);
        for (uint256 k = 0; k < n; ++k) {
            imports[k] = uint32(_bound(uint256(keccak256(abi.encode(seed, k))), 0, MAX_RATE));
            exports[k] = uint32(_bound(uint256(keccak256(abi.encode(seed, k, 1))), 0, MAX_RATE));
            refDayAhead[from / PERIOD + k][0] = uint256(imports[k]) + 1;
            refDayAhead[from / PERIOD + k][1] = uint256(exports[k]) + 1;
        }
        billing.publishDayAheadPrices(uint64(from), imports, exports);
    }

    /// @notice Closes a meter's open period: the bill is the ghost's figures and the reference standing charge.
    function closePeriod(uint256 m) external {
        _tick(0);
        uint256 i = m % METERS;
        Ghost storage g = ghosts[i];
        if (g.ts == g.periodStart) return;
        vm.recordLogs();
        billing.closeBillingPeriod(meter(i));
        Vm.Log[] memory logs = vm.getRecordedLogs();
        (uint32 id, uint64 start, uint64 end,,, uint64 cost, uint64 credit, uint64 standing,) =
            abi.decode(logs[0].data, (uint32, uint64, uint64, uint64, uint64, uint64, uint64, uint64, int256));
        require(id == g.periodId && start == g.periodStart && end == g.ts, "the period billed");
        _eq(cost, g.cost, "billed cost: the readings' reference charges");
        _eq(credit, g.credit, "billed credit: the readings' reference charges");
        _eq(standing, _refStanding(g.periodStart, g.ts), "billed standing charge");
        (g.cost, g.credit, g.periodStart, g.periodId) = (0, 0, g.ts, g.periodId + 1);
    }

    /// @notice A demand-response event for one meter, run to its end and settled with a measured reduction.
    function settleEvent(uint256 m, uint256 periods, uint256 rateSeed, uint256 baselineSeed, uint256 actualSeed)
        external
    {
        _tick(0);
        uint256 i = m % METERS;
        address who = meter(i);
        uint256 duration = _bound(periods, 1, 4) * PERIOD;
        uint32 rate = uint32(_bound(rateSeed, 0, MAX_RATE));
        uint256 start = (clock / PERIOD + 1) * PERIOD;
        address[] memory targets = new address[](1);
        targets[0] = who;
        uint64 id = dr.createEvent(
            bytes32("flex"), DemandResponse.Terms(uint32(start), uint32(duration), 0, 0, 1, rate), new bytes32[](0), targets
        );
        _tick(start + duration - clock);
        uint256 most = _creditBoundWh(duration);
        _eq(dr.creditBoundWh(id), most, "the contract's bound");
        uint256 baseline = _bound(baselineSeed, 0, CREDIT_BOUND_ENFORCED ? 2 * most + 1 : most);
        // One call in four asks for the bound itself or one Wh above it: the edge an off-by-one would move.
        if (CREDIT_BOUND_ENFORCED && baselineSeed % 4 == 0) baseline = most + (baselineSeed >> 2) % 2;
        uint256 actual = _bound(actualSeed, 0, baseline);
        DemandResponse.Credit[] memory credits = new DemandResponse.Credit[](1);
        credits[0] = DemandResponse.Credit(who, uint64(baseline), uint64(actual));
        if (CREDIT_BOUND_ENFORCED && baseline > most) {
            try dr.credit(id, credits) {
                revert("a baseline above max power x window was accepted");
            } catch (bytes memory why) {
                require(
                    keccak256(why)
                        == keccak256(abi.encodeWithSelector(DemandResponse.CreditAboveBound.selector, id, who, uint64(baseline), most)),
                    "refused as above the bound"
                );
            }
            return;
        }
        vm.recordLogs();
        dr.credit(id, credits);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs[0].topics[0] == DemandResponse.CreditApplied.selector, "credit applied");
        (uint32 periodId,,, uint64 amount) = abi.decode(logs[0].data, (uint32, uint64, uint64, uint64));
        if (!_creditWithinBound(amount, duration, rate)) ++creditsOverBound;
        ghostCredit[who][periodId] += amount;
        ++creditsApplied;
    }

    function _snapshot(uint256 p) internal {
        if (pricedAt[p] != 0 || pricedPeriods.length >= MAX_SNAPSHOTS) return;
        (uint256 importPrice, uint256 exportPrice) = _refPrice(p);
        pricedAt[p] = (importPrice << 32 | exportPrice) + 1;
        pricedPeriods.push(p);
    }
}

/// @title BillingInvariantTest
/// @notice The review's invariants, after every call of a random sequence of the handler's actions.
contract BillingInvariantTest {
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    BillingHandler internal handler;
    SmartMeterBilling internal billing;
    DemandResponse internal dr;

    function setUp() public {
        handler = new BillingHandler();
        (billing, dr) = handler.contracts();
    }

    /// @notice forge's invariant campaign calls only the handler.
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    /// @notice ... and only its actions.
    function targetSelectors() public view returns (FuzzSelector[] memory selectors) {
        bytes4[] memory actions = new bytes4[](9);
        actions[0] = BillingHandler.read.selector;
        actions[1] = BillingHandler.readBadly.selector;
        actions[2] = BillingHandler.setTariff.selector;
        actions[3] = BillingHandler.publishDayAhead.selector;
        actions[4] = BillingHandler.closePeriod.selector;
        actions[5] = BillingHandler.settleEvent.selector;
        actions[6] = BillingHandler.exchange.selector;
        actions[7] = BillingHandler.reset.selector;
        actions[8] = BillingHandler.withdrawTariff.selector;
        selectors = new FuzzSelector[](1);
        selectors[0] = FuzzSelector(address(handler), actions);
    }

    /// @notice Registers, sequence numbers and timestamps never fall: the handler requires each recorded
    /// reading to raise them, and here the chain still holds exactly what it last saw (a register reset or
    /// exchange sets the ghost to the registers it restarts at).
    function invariant_registersSequencesAndTimestampsNeverFall() public view {
        for (uint256 i = 0; i < 3; ++i) {
            BillingHandler.Ghost memory g = handler.ghost(i);
            (,,,, uint64 seq, uint64 ts, uint64 imp, uint64 exp) = billing.meterState(handler.meter(i));
            require(seq == g.seq && ts == g.ts && imp == g.imp && exp == g.exp, "meter state moved behind the readings");
        }
    }

    /// @notice No gap: a meter's last seq is the count of its recorded and content-refused readings since its
    /// last restart (registration, exchange or register reset).
    function invariant_lastSeqCountsEveryReadingSinceTheRestart() public view {
        for (uint256 i = 0; i < 3; ++i) {
            (,,,, uint64 seq,,,) = billing.meterState(handler.meter(i));
            require(seq == handler.ghost(i).counted, "a meter's last seq skipped a number");
        }
    }

    /// @notice An open bill is the sum of its readings' charges by the reference split.
    function invariant_openBillIsTheSumOfTheReadingsReferenceCharges() public view {
        for (uint256 i = 0; i < 3; ++i) {
            BillingHandler.Ghost memory g = handler.ghost(i);
            (uint32 periodId, uint64 start,,,, uint64 cost, uint64 credit,,) = billing.openBill(handler.meter(i));
            require(periodId == g.periodId && start == g.periodStart, "open period");
            require(cost == g.cost, "open bill's import cost differs from the reference split");
            require(credit == g.credit, "open bill's export credit differs from the reference split");
        }
    }

    /// @notice A recorded reading is never repriced: every period a recorded reading covered keeps the
    /// prices it was charged at, whatever tariffs and day-ahead prices came after.
    function invariant_aRecordedReadingIsNeverRepriced() public view {
        uint256 n = handler.pricedCount();
        for (uint256 k = 0; k < n; ++k) {
            uint256 p = handler.pricedPeriods(k);
            (uint32 importPrice, uint32 exportPrice) = billing.pricesAt(uint64(p * 1800));
            require(handler.pricedAt(p) == (uint256(importPrice) << 32 | exportPrice) + 1, "a charged period was repriced");
        }
    }

    /// @notice No demand-response credit exceeds max power x window x rate, and each is filed whole.
    function invariant_aCreditNeverExceedsItsBound() public view {
        require(handler.creditsOverBound() == 0, "a credit above max power x window x rate");
        for (uint256 i = 0; i < 3; ++i) {
            address who = handler.meter(i);
            BillingHandler.Ghost memory g = handler.ghost(i);
            for (uint32 p = 1; p <= g.periodId; ++p) {
                require(dr.creditOf(who, p) == handler.ghostCredit(who, p), "credits filed");
            }
        }
    }
}
