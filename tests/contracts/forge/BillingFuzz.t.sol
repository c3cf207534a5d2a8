// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {SmartMeterBilling} from "../../../contracts/SmartMeterBilling.sol";
import {BillingFixture} from "./Base.sol";
import {Vm} from "./Vm.sol";

/// @title BillingFuzzTest
/// @notice A fuzz test of each external function of SmartMeterBilling (its views are checked inside them).
contract BillingFuzzTest is BillingFixture {
    address internal meter;
    uint256 internal meterKey;

    function setUp() public {
        _deploy();
        meterKey = _key(1);
        meter = vm.addr(meterKey);
        billing.registerMeter(meter, bytes32("acct-1"), bytes32("north"), 1_000, 0);
    }

    function testFuzz_registerMeter(address who, bytes32 accountRef, bytes32 region, uint64 openingWh, uint32 ago)
        public
    {
        vm.assume(who != address(0) && who != meter);
        ago = uint32(_bound(ago, 0, 365 days));
        uint256 count = billing.meterCount();
        if (openingWh > type(uint48).max) {
            vm.expectRevert(
                abi.encodeWithSelector(SmartMeterBilling.ValueTooLarge.selector, openingWh, type(uint48).max)
            );
            billing.registerMeter(who, accountRef, region, openingWh, uint64(clock - ago));
            return;
        }
        billing.registerMeter(who, accountRef, region, openingWh, uint64(clock - ago));
        (bool registered, bool active, bytes32 a, bytes32 r, uint64 seq, uint64 ts, uint64 imp, uint64 exp) =
            billing.meterState(who);
        require(registered && active && a == accountRef && r == region, "registration kept");
        _eq(seq, 0, "seq");
        _eq(ts, clock - ago, "opening time");
        _eq(imp, openingWh, "opening register");
        _eq(exp, 0, "export register");
        _eq(billing.meterCount(), count + 1, "count");
        require(billing.meterAt(count) == who, "listed last");
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.MeterAlreadyRegistered.selector, who));
        billing.registerMeter(who, accountRef, region, openingWh, 0);
        vm.expectRevert(SmartMeterBilling.ZeroAddress.selector);
        billing.registerMeter(address(0), accountRef, region, openingWh, 0);
        vm.expectRevert(
            abi.encodeWithSelector(
                SmartMeterBilling.OpeningInFuture.selector, uint64(clock + 1), uint64(clock)
            )
        );
        billing.registerMeter(address(uint160(uint256(keccak256(abi.encode(who))))), accountRef, region, openingWh, uint64(clock + 1));
    }

    function testFuzz_registerMeters(uint8 n, uint256 seed) public {
        n = uint8(_bound(n, 1, 20));
        address[] memory meters = new address[](n);
        bytes32[] memory refs = new bytes32[](n);
        bytes32[] memory regions = new bytes32[](n);
        uint64[] memory opening = new uint64[](n);
        for (uint256 i = 0; i < n; ++i) {
            meters[i] = address(uint160(uint256(keccak256(abi.encode(seed, i)))));
            refs[i] = keccak256(abi.encode("ref", seed, i));
            regions[i] = bytes32("south");
            opening[i] = uint64(uint256(keccak256(abi.encode("wh", seed, i))) % 2 ** 48);
        }
        billing.registerMeters(meters, refs, regions, opening, 0);
        for (uint256 i = 0; i < n; ++i) {
            require(billing.meterAt(1 + i) == meters[i], "order kept");
            (,,,,,, uint64 imp,) = billing.meterState(meters[i]);
            _eq(imp, opening[i], "opening register");
        }
        bytes32[] memory short = new bytes32[](n - 1);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.LengthMismatch.selector, n, n - 1));
        billing.registerMeters(meters, short, regions, opening, 0);
    }

    function testFuzz_deactivateAndReactivateMeter(uint32 dt) public {
        dt = uint32(_bound(dt, 1, 1 days));
        billing.deactivateMeter(meter);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.MeterNotActive.selector, meter));
        billing.deactivateMeter(meter);
        _warp(clock + dt);
        billing.submitReadings(_record(meterKey, 1, clock, 1_001, 0));
        (uint256 seq,,,) = _state(meter);
        _eq(seq, 0, "an inactive meter's reading is rejected");
        billing.reactivateMeter(meter);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.MeterAlreadyActive.selector, meter));
        billing.reactivateMeter(meter);
        billing.submitReadings(_record(meterKey, 1, clock, 1_001, 0));
        (seq,,,) = _state(meter);
        _eq(seq, 1, "recorded once active again");
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.UnknownMeter.selector, address(0xdead)));
        billing.deactivateMeter(address(0xdead));
    }

    function testFuzz_setTariff(uint8 kind, uint32 rate, uint32 exportRate, uint256 bands, uint16 later) public {
        kind = uint8(_bound(kind, 0, 2));
        rate = uint32(_bound(rate, 1, type(uint32).max));
        uint256 from = ((clock + SKEW) / PERIOD + 1 + _bound(later, 0, 1000)) * PERIOD;
        SmartMeterBilling.Tariff memory t;
        t.effectiveFrom = uint32(from);
        t.standingCharge = 50_000;
        t.importKind = kind;
        t.importRate = rate;
        t.importBands = bands % 2 ** 144;
        t.importBandRates = uint256(keccak256(abi.encode(bands)));
        t.exportRate = exportRate;
        _eq(billing.setTariff(t), 2, "version number");
        _refAddVersion(t);
        _eq(billing.tariffCount(), 2, "count");
        _eq(billing.tariffVersionAt(uint64(from - 1)), 1, "in force before");
        _eq(billing.tariffVersionAt(uint64(from)), 2, "in force from");
        SmartMeterBilling.Tariff memory kept = billing.tariffVersion(2);
        require(keccak256(abi.encode(kept)) == keccak256(abi.encode(t)), "version kept as set");
        for (uint256 p = from / PERIOD - 2; p < from / PERIOD + 50; ++p) {
            (uint32 i, uint32 e) = billing.pricesAt(uint64(p * PERIOD));
            (uint256 ri, uint256 re) = _refPrice(p);
            _eq(i, ri, "import price");
            _eq(e, re, "export price");
        }
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.NotPeriodBoundary.selector, uint64(from + 1)));
        t.effectiveFrom = uint32(from + 1);
        billing.setTariff(t);
        t.effectiveFrom = uint32(from);
        vm.expectRevert(
            abi.encodeWithSelector(SmartMeterBilling.NotAfterLastVersion.selector, uint64(from), uint64(from))
        );
        billing.setTariff(t);
    }

    function testFuzz_publishDayAheadPrices(uint16 later, uint8 n, uint256 seed) public {
        SmartMeterBilling.Tariff memory t;
        t.importKind = 2;
        t.importRate = 20_000;
        t.exportKind = 2;
        t.exportRate = 5_000;
        uint256 from = ((clock + SKEW) / PERIOD + 1) * PERIOD;
        t.effectiveFrom = uint32(from);
        billing.setTariff(t);
        _refAddVersion(t);
        n = uint8(_bound(n, 1, 100));
        uint64 start = uint64(from + _bound(later, 0, 500) * PERIOD);
        uint32[] memory imports = new uint32[](n);
        uint32[] memory exports = new uint32[](n);
        for (uint256 i = 0; i < n; ++i) {
            imports[i] = uint32(uint256(keccak256(abi.encode(seed, i))) % type(uint32).max);
            exports[i] = uint32(uint256(keccak256(abi.encode(seed, i, 1))) % type(uint32).max);
            refDayAhead[start / PERIOD + i][0] = uint256(imports[i]) + 1;
            refDayAhead[start / PERIOD + i][1] = uint256(exports[i]) + 1;
        }
        billing.publishDayAheadPrices(start, imports, exports);
        for (uint256 p = start / PERIOD - 1; p <= start / PERIOD + n; ++p) {
            (uint32 i, uint32 e) = billing.pricesAt(uint64(p * PERIOD));
            (uint256 ri, uint256 re) = _refPrice(p);
            _eq(i, ri, "day-ahead import");
            _eq(e, re, "day-ahead export");
        }
        imports[0] = type(uint32).max;
        vm.expectRevert(
            abi.encodeWithSelector(SmartMeterBilling.ValueTooLarge.selector, type(uint32).max, type(uint32).max - 1)
        );
        billing.publishDayAheadPrices(start, imports, new uint32[](0));
    }

    function testFuzz_addClockChanges(uint32 ahead, int8 halfHours) public {
        ahead = uint32(_bound(ahead, SKEW, 3650 days));
        int16 offset = int16(int256(_bound(uint256(int256(halfHours) + 128), 128 - 48, 128 + 48)) - 128) * 30;
        uint32 at = uint32(clock) + ahead;
        SmartMeterBilling.ClockChange[] memory changes = new SmartMeterBilling.ClockChange[](1);
        changes[0] = SmartMeterBilling.ClockChange(at, offset);
        billing.addClockChanges(changes);
        require(billing.clockOffsetAt(at - 1) == 0, "offset before");
        require(billing.clockOffsetAt(at) == offset, "offset from");
        require(billing.clockOffsetAt(at + 400 days) == offset, "offset after the last change");
        changes[0] = SmartMeterBilling.ClockChange(at, offset);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.ClockChangeOutOfOrder.selector, at, at));
        billing.addClockChanges(changes);
        changes[0] = SmartMeterBilling.ClockChange(at + 1, 7);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.InvalidClockOffset.selector, int16(7)));
        billing.addClockChanges(changes);
    }

    /// @dev Priced by a banded import and export tariff from the first reading on, so every half hour of a
    /// reading may have its own price.
    function testFuzz_submitReadings(uint32 dt, uint64 importPower, uint64 exportPower, uint32 start) public {
        start = uint32(_bound(start, 1, 2 days));
        dt = uint32(_bound(dt, 1, 3 days));
        SmartMeterBilling.Tariff memory t;
        t.effectiveFrom = uint32(((clock + SKEW) / PERIOD + 1) * PERIOD);
        (t.importKind, t.exportKind) = (1, 1);
        t.importBands = uint256(keccak256(abi.encode(dt, start))) % 2 ** 144;
        t.exportBands = uint256(keccak256(abi.encode(start, dt))) % 2 ** 144;
        for (uint256 b = 0; b < 8; ++b) {
            t.importBandRates |= (5_000 + 4_000 * b) << (32 * b);
            t.exportBandRates |= (1_000 + 2_000 * b) << (32 * b);
        }
        billing.setTariff(t);
        _refAddVersion(t);
        _warp(t.effectiveFrom + start);
        billing.submitReadings(_record(meterKey, 1, clock, 1_000, 0));
        uint256 t0 = clock;
        _warp(t0 + dt);
        uint256 limit = uint256(MAX_POWER_W) * dt / 3600;
        uint256 dImport = _bound(importPower, 0, limit);
        uint256 dExport = _bound(exportPower, 0, limit);
        vm.recordLogs();
        billing.submitReadings(_record(meterKey, 2, t0 + dt, 1_000 + dImport, dExport));
        Vm.Log[] memory logs = vm.getRecordedLogs();
        _eq(logs.length, 1, "one event");
        require(logs[0].topics[0] == SmartMeterBilling.ReadingRecorded.selector, "recorded");
        uint256 record = abi.decode(logs[0].data, (uint256));
        (uint256 cost, uint256 credit) = _refSplit(t0, t0 + dt, dImport, dExport);
        _eq(uint32(record), 2, "record: seq");
        _eq(uint32(record >> 32), t0 + dt, "record: timestamp");
        _eq(uint48(record >> 64), 1_000 + dImport, "record: import register");
        _eq(uint48(record >> 112), dExport, "record: export register");
        _eq(uint48(record >> 160), cost, "record: cost");
        _eq(record >> 208, credit, "record: credit");
        (uint256 billCost, uint256 billCredit) = _bill(meter);
        _eq(billCost, cost, "bill: cost by the reference split");
        _eq(billCredit, credit, "bill: credit by the reference split");
        bytes memory bad = _record(meterKey, 3, t0 + dt, 1_000 + dImport, dExport);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.BadBatchLength.selector, bad.length - 1));
        billing.submitReadings(_slice(bad, bad.length - 1));
    }

    /// @dev Seq must be the last + 1. A refusal before the signature is checked (stale seq, a gap) or for the
    /// signature changes nothing; a correctly signed reading refused for its content uses its seq up and
    /// changes nothing else, and the next seq then records.
    function testFuzz_submitReadings_rejectsWhatWouldMakeAFigureFall(uint8 fault, uint32 dt) public {
        dt = uint32(_bound(dt, 200, 1 days));
        _warp(clock + dt);
        billing.submitReadings(_record(meterKey, 1, clock, 2_000, 10));
        (uint256 seq, uint256 ts, uint256 imp, uint256 exp) = _state(meter);
        _warp(clock + dt);
        fault = uint8(_bound(fault, 0, 7));
        bytes memory r;
        SmartMeterBilling.RejectReason reason;
        if (fault == 0) (r, reason) = (_record(meterKey, 1, ts + 1, 2_001, 10), SmartMeterBilling.RejectReason.StaleSequence);
        if (fault == 1) (r, reason) = (_record(meterKey, 2, ts, 2_001, 10), SmartMeterBilling.RejectReason.StaleTimestamp);
        if (fault == 2) (r, reason) = (_record(meterKey, 2, ts + 1, 1_999, 10), SmartMeterBilling.RejectReason.RegisterDecreased);
        if (fault == 3) (r, reason) = (_record(meterKey, 2, ts + 1, 2_001, 9), SmartMeterBilling.RejectReason.RegisterDecreased);
        if (fault == 4) {
            (r, reason) = (_record(meterKey, 2, clock + SKEW + 1, 2_001, 10), SmartMeterBilling.RejectReason.FutureTimestamp);
        }
        if (fault == 5) {
            (r, reason) = (_record(meterKey, 2, ts + dt, 2_000 + uint256(MAX_POWER_W) * dt / 3600 + 1, 10),
                SmartMeterBilling.RejectReason.ImplausibleDelta);
        }
        if (fault == 6) {
            r = _record(_key(99), 2, ts + 1, 2_001, 10);
            for (uint256 i = 0; i < 20; ++i) r[i] = bytes20(meter)[i];
            reason = SmartMeterBilling.RejectReason.BadSignature;
        }
        if (fault == 7) (r, reason) = (_record(meterKey, 3, ts + 1, 2_001, 10), SmartMeterBilling.RejectReason.SequenceGap);
        bool usesUp = fault >= 1 && fault <= 5;
        (uint256 cost, uint256 credit) = _bill(meter);
        vm.recordLogs();
        billing.submitReadings(r);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        _eq(logs.length, 1, "one event");
        require(logs[0].topics[0] == SmartMeterBilling.ReadingRejected.selector, "rejected");
        (uint64 rejectedSeq, SmartMeterBilling.RejectReason got) =
            abi.decode(logs[0].data, (uint64, SmartMeterBilling.RejectReason));
        _eq(uint8(got), uint8(reason), "reason");
        _eq(rejectedSeq, fault == 0 ? 1 : fault == 7 ? 3 : 2, "the rejected seq");
        (uint256 seq2, uint256 ts2, uint256 imp2, uint256 exp2) = _state(meter);
        _eq(seq2, usesUp ? seq + 1 : seq, "a content refusal uses its seq up, no other refusal moves it");
        require(ts2 == ts && imp2 == imp && exp2 == exp, "a rejected reading changes no register or time");
        (uint256 cost2, uint256 credit2) = _bill(meter);
        require(cost2 == cost && credit2 == credit, "a rejected reading changes no bill");
        // The next seq records, with the energy since the last recorded reading.
        billing.submitReadings(_record(meterKey, seq2 + 1, clock, 2_001, 10));
        (uint256 seq3, uint256 ts3,,) = _state(meter);
        require(seq3 == seq2 + 1 && ts3 == clock, "the next seq records");
    }

    /// @dev The old meter's final read is priced into the open period (the reference split), the new meter
    /// takes the account over with its sequence at 0, and the old one is retired for good.
    function testFuzz_exchangeMeter(uint32 dt, uint32 used, uint48 openingImport, uint48 openingExport, uint256 newKey)
        public
    {
        dt = uint32(_bound(dt, 1, 20 days));
        newKey = _bound(newKey, 2, SECP256K1_ORDER - 1);
        vm.assume(openingImport < type(uint48).max);
        address newMeter = vm.addr(newKey);
        vm.assume(newMeter != meter);
        uint256 opened = clock;
        _warp(opened + dt);
        used = uint32(_bound(used, 0, uint256(MAX_POWER_W) * dt / 3600));
        (uint256 cost,) = _refSplit(opened, opened + dt, used, 0);
        vm.expectRevert(
            abi.encodeWithSelector(SmartMeterBilling.FinalReadRejected.selector, meter, SmartMeterBilling.RejectReason.RegisterDecreased)
        );
        billing.exchangeMeter(meter, newMeter, 999, 0, uint64(clock), openingImport, openingExport);
        vm.recordLogs();
        billing.exchangeMeter(meter, newMeter, 1_000 + used, 0, uint64(clock), openingImport, openingExport);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs[0].topics[0] == SmartMeterBilling.MeterExchanged.selector, "exchanged");
        (uint256 finalRecord,,) = abi.decode(logs[0].data, (uint256, uint64, uint64));
        _eq(uint48(finalRecord >> 64), 1_000 + used, "final read: import register");
        _eq(uint48(finalRecord >> 160), cost, "final read: cost by the reference split");
        (bool registered, bool active, bytes32 account,, uint64 seq, uint64 ts, uint64 imp, uint64 exp) =
            billing.meterState(newMeter);
        require(registered && active && account == bytes32("acct-1"), "the new meter holds the account");
        require(seq == 0 && ts == clock && imp == openingImport && exp == openingExport, "the new meter's registers");
        (uint32 periodId, uint64 start, uint64 end, uint64 importWh,, uint64 billCost,,,) = billing.openBill(newMeter);
        require(periodId == 1 && start == opened && end == clock, "the open period goes on");
        _eq(importWh, used, "the period's energy");
        _eq(billCost, cost, "the period's cost");
        (, active,,,,,,) = billing.meterState(meter);
        require(!active, "the old meter is inactive");
        (,,,,, billCost,,,) = billing.openBill(meter);
        _eq(billCost, 0, "the old meter has nothing left to bill");
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.MeterRetired.selector, meter));
        billing.reactivateMeter(meter);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.MeterAlreadyRegistered.selector, meter));
        billing.registerMeter(meter, bytes32(0), bytes32(0), 0, 0);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.MeterRetired.selector, meter));
        billing.exchangeMeter(meter, address(0xbeef), 1_000 + used, 0, uint64(clock), 0, 0);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.MeterAlreadyRegistered.selector, newMeter));
        billing.exchangeMeter(newMeter, newMeter, openingImport, openingExport, uint64(clock), 0, 0);
        _warp(clock + 60);
        billing.submitReadings(_record(newKey, 1, clock, uint256(openingImport) + 1, openingExport));
        (,,,, seq,,,) = billing.meterState(newMeter);
        _eq(seq, 1, "the new meter records from seq 1");
    }

    /// @dev After a reset the registers restart and the sequence at 0; the time and the open bill stay.
    function testFuzz_resetRegister(uint32 dt, uint32 used, uint48 importWh, uint48 exportWh) public {
        dt = uint32(_bound(dt, 1, 20 days));
        vm.assume(importWh < type(uint48).max);
        uint256 opened = clock;
        _warp(opened + dt);
        billing.submitReadings(_record(meterKey, 1, clock, 1_000, 0));
        uint256 t1 = clock;
        _warp(t1 + dt);
        used = uint32(_bound(used, 0, uint256(MAX_POWER_W) * dt / 3600));
        (uint256 cost,) = _refSplit(t1, t1 + dt, used, 0);
        vm.expectRevert(
            abi.encodeWithSelector(SmartMeterBilling.FinalReadRejected.selector, meter, SmartMeterBilling.RejectReason.FutureTimestamp)
        );
        billing.resetRegister(meter, 1_000 + used, 0, uint64(clock + SKEW + 1), importWh, exportWh);
        vm.recordLogs();
        billing.resetRegister(meter, 1_000 + used, 0, uint64(clock), importWh, exportWh);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs[0].topics[0] == SmartMeterBilling.RegisterReset.selector, "reset");
        (uint256 finalRecord,,) = abi.decode(logs[0].data, (uint256, uint64, uint64));
        _eq(uint32(finalRecord), 1, "final read: the old sequence");
        _eq(uint48(finalRecord >> 160), cost, "final read: cost by the reference split");
        (uint256 seq, uint256 ts, uint256 imp, uint256 exp) = _state(meter);
        require(seq == 0 && ts == clock && imp == importWh && exp == exportWh, "registers and sequence restart");
        (uint32 periodId, uint64 start,, uint64 periodImport,, uint64 billCost,,,) = billing.openBill(meter);
        require(periodId == 1 && start == opened, "the open period goes on");
        _eq(periodImport, used, "the period's energy across the reset");
        _eq(billCost, cost, "the period's cost");
        // A reading signed under the old sequence before the reset cannot come again (its time is past).
        billing.submitReadings(_record(meterKey, 1, t1 + 1, importWh, exportWh));
        (seq,,,) = _state(meter);
        _eq(seq, 1, "an old reading is refused for its time and uses seq 1 up");
        _warp(clock + 60);
        billing.submitReadings(_record(meterKey, 2, clock, uint256(importWh) + 1, exportWh));
        (seq, ts,,) = _state(meter);
        require(seq == 2 && ts == clock, "records after the reset");
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.UnknownMeter.selector, address(0xdead)));
        billing.resetRegister(address(0xdead), 0, 0, 0, 0, 0);
    }

    /// @dev The newest version may be withdrawn while it starts at least the skew ahead; its number is reused.
    function testFuzz_withdrawTariff(uint32 rate, uint16 later, uint32 wait) public {
        rate = uint32(_bound(rate, 1, type(uint32).max));
        uint256 from = ((clock + SKEW) / PERIOD + 1 + _bound(later, 0, 1000)) * PERIOD;
        SmartMeterBilling.Tariff memory t;
        t.effectiveFrom = uint32(from);
        t.importRate = rate;
        billing.setTariff(t);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.NotNewestVersion.selector, uint32(1), uint32(2)));
        billing.withdrawTariff(1);
        _warp(clock + _bound(wait, 0, from - clock));
        if (from < clock + SKEW) {
            vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.TooSoon.selector, uint64(from), uint64(clock + SKEW)));
            billing.withdrawTariff(2);
            _eq(billing.tariffCount(), 2, "kept");
            return;
        }
        vm.recordLogs();
        billing.withdrawTariff(2);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs[0].topics[0] == SmartMeterBilling.TariffWithdrawn.selector, "withdrawn");
        _eq(billing.tariffCount(), 1, "count");
        _eq(billing.tariffVersionAt(uint64(from)), 1, "the opening version in force again");
        (uint32 i,) = billing.pricesAt(uint64(from));
        _eq(i, UNIT_RATE, "the opening price");
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.NotNewestVersion.selector, uint32(1), uint32(1)));
        billing.withdrawTariff(1);
        t.effectiveFrom = uint32(((clock + SKEW) / PERIOD + 1) * PERIOD);
        _eq(billing.setTariff(t), 2, "the number reused");
    }

    /// @dev The last clock change may be withdrawn while it lies at least the skew ahead.
    function testFuzz_withdrawClockChange(uint32 ahead, uint32 gap, int8 halfHours, uint32 wait) public {
        ahead = uint32(_bound(ahead, SKEW, 3650 days));
        gap = uint32(_bound(gap, 1, 400 days));
        int16 offset = int16(int256(_bound(uint256(int256(halfHours) + 128), 128 - 48, 128 + 48)) - 128) * 30;
        uint32 first = uint32(clock) + ahead;
        uint32 second = first + gap;
        SmartMeterBilling.ClockChange[] memory changes = new SmartMeterBilling.ClockChange[](2);
        changes[0] = SmartMeterBilling.ClockChange(first, 60);
        changes[1] = SmartMeterBilling.ClockChange(second, offset);
        billing.addClockChanges(changes);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.NotLastClockChange.selector, uint64(first), uint64(second)));
        billing.withdrawClockChange(first);
        _warp(clock + _bound(wait, 0, ahead + gap));
        if (second < clock + SKEW) {
            vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.TooSoon.selector, uint64(second), uint64(clock + SKEW)));
            billing.withdrawClockChange(second);
            return;
        }
        vm.recordLogs();
        billing.withdrawClockChange(second);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs[0].topics[0] == SmartMeterBilling.ClockChangeWithdrawn.selector, "withdrawn");
        require(billing.clockOffsetAt(second) == 60 && billing.clockOffsetAt(second + 400 days) == 60, "the first stays");
        if (first >= clock + SKEW) {
            billing.withdrawClockChange(first);
            require(billing.clockOffsetAt(first) == 0, "none left");
            vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.NotLastClockChange.selector, uint64(first), uint64(0)));
            billing.withdrawClockChange(first);
        }
        // A corrected change can be published after the withdrawal.
        changes = new SmartMeterBilling.ClockChange[](1);
        changes[0] = SmartMeterBilling.ClockChange(second, 0);
        billing.addClockChanges(changes);
        require(billing.clockOffsetAt(second) == 0, "the corrected change");
    }

    function testFuzz_closeBillingPeriod(uint32 dt, uint32 used) public {
        dt = uint32(_bound(dt, 1, 20 days));
        uint256 opened = clock;
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.EmptyBillingPeriod.selector, meter, uint32(1)));
        billing.closeBillingPeriod(meter);
        _warp(opened + dt);
        used = uint32(_bound(used, 0, uint256(MAX_POWER_W) * dt / 3600));
        billing.submitReadings(_record(meterKey, 1, opened + dt, 1_000 + used, 0));
        (uint256 cost,) = _refSplit(opened, opened + dt, used, 0);
        uint256 standing = _refStanding(opened, opened + dt);
        _eq(billing.standingChargeBetween(uint64(opened), uint64(opened + dt)), standing, "standing charge");
        vm.recordLogs();
        billing.closeBillingPeriod(meter);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs[0].topics[0] == SmartMeterBilling.BillIssued.selector, "bill issued");
        (uint32 id, uint64 start, uint64 end, uint64 importWh,, uint64 importCost,, uint64 standingCharge, int256 due) =
            abi.decode(logs[0].data, (uint32, uint64, uint64, uint64, uint64, uint64, uint64, uint64, int256));
        _eq(id, 1, "period id");
        _eq(start, opened, "start");
        _eq(end, opened + dt, "end");
        _eq(importWh, used, "energy");
        _eq(importCost, cost, "cost");
        _eq(standingCharge, standing, "standing");
        _eq(uint256(due), cost + standing, "amount due");
        (uint32 next, uint64 nextStart,,,, uint64 c,,,) = billing.openBill(meter);
        require(next == 2 && nextStart == opened + dt && c == 0, "a new period opens empty");
    }

    function testFuzz_raiseAndClearGridAlert(uint8 severity, uint32 lasts, bytes32 kind, bytes32 region) public {
        lasts = uint32(_bound(lasts, 1, 30 days));
        if (severity > 2) {
            vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.InvalidSeverity.selector, severity));
            billing.raiseGridAlert(severity, kind, region, "x", uint64(clock + lasts));
            return;
        }
        uint64 id = billing.raiseGridAlert(severity, kind, region, "reduce usage", uint64(clock + lasts));
        require(billing.isAlertActive(id), "active");
        _warp(clock + lasts);
        require(!billing.isAlertActive(id), "lapses by itself");
        billing.clearGridAlert(id);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.AlertNotActive.selector, id));
        billing.clearGridAlert(id);
        vm.expectRevert(
            abi.encodeWithSelector(SmartMeterBilling.InvalidExpiry.selector, uint64(clock), uint64(clock))
        );
        billing.raiseGridAlert(severity, kind, region, "x", uint64(clock));
    }

    /// @notice OpenZeppelin's role functions: a granted role lets its holder in, a revoked or renounced one no more.
    function testFuzz_grantRevokeAndRenounceRole(address who, bool renounce) public {
        vm.assume(who != address(this) && who != address(0));
        bytes32 role = billing.GATEWAY_ROLE();
        require(billing.getRoleAdmin(role) == bytes32(0) && billing.supportsInterface(0x7965db0b), "admin, ERC-165");
        billing.grantRole(role, who);
        require(billing.hasRole(role, who), "granted");
        vm.prank(who);
        vm.expectRevert(abi.encodeWithSelector(SmartMeterBilling.BadBatchLength.selector, 1));
        billing.submitReadings(hex"00");
        if (renounce) {
            vm.prank(who);
            billing.renounceRole(role, who);
        } else {
            billing.revokeRole(role, who);
        }
        require(!billing.hasRole(role, who), "gone");
        _requireRefusedForWantOfRole(address(billing), who, abi.encodeCall(billing.submitReadings, (hex"00")), role);
    }

    /// @notice Every role-guarded function refuses a caller without the role, and the views need none.
    function testFuzz_rolesGuardEveryWritingFunction(address caller, uint8 which) public {
        vm.assume(caller != address(this));
        require(billing.domainSeparator() == _domain("SmartMeterBilling", address(billing)), "domain");
        bytes32 role = billing.OPERATOR_ROLE();
        bytes memory call;
        which = uint8(_bound(which, 0, 14));
        SmartMeterBilling.Tariff memory t;
        if (which == 0) call = abi.encodeCall(billing.registerMeter, (caller, bytes32(0), bytes32(0), 0, 0));
        if (which == 1) {
            call = abi.encodeCall(billing.registerMeters, (new address[](0), new bytes32[](0), new bytes32[](0), new uint64[](0), 0));
        }
        if (which == 2) call = abi.encodeCall(billing.deactivateMeter, (meter));
        if (which == 3) call = abi.encodeCall(billing.reactivateMeter, (meter));
        if (which == 4) call = abi.encodeCall(billing.setTariff, (t));
        if (which == 5) call = abi.encodeCall(billing.publishDayAheadPrices, (0, new uint32[](0), new uint32[](0)));
        if (which == 6) call = abi.encodeCall(billing.addClockChanges, (new SmartMeterBilling.ClockChange[](0)));
        if (which == 7) call = abi.encodeCall(billing.closeBillingPeriod, (meter));
        if (which == 8) (call, role) = (abi.encodeCall(billing.submitReadings, ("")), billing.GATEWAY_ROLE());
        if (which == 9) (call, role) = (abi.encodeCall(billing.raiseGridAlert, (0, bytes32(0), bytes32(0), "", 0)), billing.GRID_OPERATOR_ROLE());
        if (which == 10) (call, role) = (abi.encodeCall(billing.clearGridAlert, (1)), billing.GRID_OPERATOR_ROLE());
        if (which == 11) call = abi.encodeCall(billing.exchangeMeter, (meter, caller, 0, 0, 0, 0, 0));
        if (which == 12) call = abi.encodeCall(billing.resetRegister, (meter, 0, 0, 0, 0, 0));
        if (which == 13) call = abi.encodeCall(billing.withdrawTariff, (1));
        if (which == 14) call = abi.encodeCall(billing.withdrawClockChange, (0));
        _requireRefusedForWantOfRole(address(billing), caller, call, role);
    }

    function _slice(bytes memory b, uint256 n) internal pure returns (bytes memory out) {
        out = new bytes(n);
        for (uint256 i = 0; i < n; ++i) out[i] = b[i];
    }
}
