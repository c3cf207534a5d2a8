// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {SmartMeterBilling} from "../../../contracts/SmartMeterBilling.sol";
import {DemandResponse} from "../../../contracts/DemandResponse.sol";
import {BillingFixture} from "./Base.sol";
import {Vm} from "./Vm.sol";

/// @title BillingHandler
/// @notice What forge's invariant campaign calls: meters' readings (good and faulty), tariff versions,
/// day-ahead prices, closed periods and settled demand-response events, in random order, with a ghost
/// of what each meter's figures must be. Each action checks what it can at once (a `require` failing
/// here fails the campaign: fail_on_revert) and the invariants check the rest after every call.
contract BillingHandler is BillingFixture {
    /// @dev Issue 24 item 5 (a bound on each credit, refused above it with a custom error) is being added
    /// now. Until it lands the handler credits only physically possible reductions. When it lands set this
    /// to true: the handler then also asks for credits up to twice the bound and requires the contract to
    /// refuse each one above it.
    bool internal constant CREDIT_BOUND_ENFORCED = false;

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
    }

    Ghost[METERS] internal ghosts;
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
            ghosts[i] = Ghost(0, clock, 1_000 * i, 0, 0, 0, clock, 1);
        }
    }

    function contracts() external view returns (SmartMeterBilling, DemandResponse) {
        return (billing, dr);
    }

    function meter(uint256 i) public pure returns (address) {
        return vm.addr(_key(i));
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
        billing.submitReadings(_record(_key(i), g.seq + 1, t1, g.imp + dImport, g.exp + dExport));
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs.length == 1 && logs[0].topics[0] == SmartMeterBilling.ReadingRecorded.selector, "a good reading is recorded");
        uint256 record = abi.decode(logs[0].data, (uint256));
        _eq(uint48(record >> 160), g.cost + cost, "recorded cost: the reference split");
        _eq(record >> 208, g.credit + credit, "recorded credit: the reference split");
        for (uint256 p = g.ts / PERIOD; p * PERIOD < t1; p += 7) _snapshot(p);
        _snapshot((t1 - 1) / PERIOD);
        (uint256 seq, uint256 ts, uint256 imp, uint256 exp) = _state(meter(i));
        require(seq > g.seq && ts > g.ts && imp >= g.imp && exp >= g.exp, "figures never fall");
        (g.seq, g.ts, g.imp, g.exp) = (seq, ts, imp, exp);
        g.cost += cost;
        g.credit += credit;
        ++readingsRecorded;
    }

    /// @notice A faulty reading (stale sequence or time, a falling register, too far ahead, too much
    /// energy, a wrong signature): it must be rejected and change nothing.
    function readBadly(uint256 m, uint256 fault, uint256 dt) external {
        uint256 i = m % METERS;
        _tick(_bound(dt, 1, 3600));
        Ghost storage g = ghosts[i];
        fault %= 6;
        bytes memory r;
        uint256 key = _key(i);
        if (fault == 0) r = _record(key, g.seq, clock, g.imp, g.exp);
        if (fault == 1) r = _record(key, g.seq + 1, g.ts, g.imp, g.exp);
        if (fault == 2 && g.imp > 0) r = _record(key, g.seq + 1, clock, g.imp - 1, g.exp);
        if (fault == 2 && g.imp == 0) r = _record(key, g.seq + 1, clock + SKEW + 1, g.imp, g.exp);
        if (fault == 3) r = _record(key, g.seq + 1, clock + SKEW + 1, g.imp, g.exp);
        if (fault == 4) r = _record(key, g.seq + 1, clock, g.imp + uint256(MAX_POWER_W) * (clock - g.ts) / 3600 + 1, g.exp);
        if (fault == 5) {
            r = _record(_key(i + 100), g.seq + 1, clock, g.imp, g.exp);
            address who = meter(i);
            for (uint256 k = 0; k < 20; ++k) r[k] = bytes20(who)[k];
        }
        vm.recordLogs();
        billing.submitReadings(r);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs.length == 1 && logs[0].topics[0] == SmartMeterBilling.ReadingRejected.selector, "a faulty reading is rejected");
        (uint256 seq, uint256 ts, uint256 imp, uint256 exp) = _state(meter(i));
        require(seq == g.seq && ts == g.ts && imp == g.imp && exp == g.exp, "a rejected reading changes nothing");
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
        uint256 most = uint256(MAX_POWER_W) * duration / 3600;
        uint256 baseline = _bound(baselineSeed, 0, CREDIT_BOUND_ENFORCED ? 2 * most + 1 : most);
        uint256 actual = _bound(actualSeed, 0, baseline);
        DemandResponse.Credit[] memory credits = new DemandResponse.Credit[](1);
        credits[0] = DemandResponse.Credit(who, uint64(baseline), uint64(actual));
        if (CREDIT_BOUND_ENFORCED && !_creditWithinBound((baseline - actual) * rate, duration, rate)) {
            try dr.credit(id, credits) {
                revert("a credit above max power x window x rate was accepted");
            } catch {}
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
        bytes4[] memory actions = new bytes4[](6);
        actions[0] = BillingHandler.read.selector;
        actions[1] = BillingHandler.readBadly.selector;
        actions[2] = BillingHandler.setTariff.selector;
        actions[3] = BillingHandler.publishDayAhead.selector;
        actions[4] = BillingHandler.closePeriod.selector;
        actions[5] = BillingHandler.settleEvent.selector;
        selectors = new FuzzSelector[](1);
        selectors[0] = FuzzSelector(address(handler), actions);
    }

    /// @notice Registers, sequence numbers and timestamps never fall: the handler requires each recorded
    /// reading to raise them, and here the chain still holds exactly what it last saw.
    function invariant_registersSequencesAndTimestampsNeverFall() public view {
        for (uint256 i = 0; i < 3; ++i) {
            BillingHandler.Ghost memory g = handler.ghost(i);
            (,,,, uint64 seq, uint64 ts, uint64 imp, uint64 exp) = billing.meterState(handler.meter(i));
            require(seq == g.seq && ts == g.ts && imp == g.imp && exp == g.exp, "meter state moved behind the readings");
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
