// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {DemandResponse} from "../../../contracts/DemandResponse.sol";
import {BillingFixture} from "./Base.sol";
import {Vm} from "./Vm.sol";

/// @title DemandResponseFuzzTest
/// @notice A fuzz test of each external function of DemandResponse (its views are checked inside them).
contract DemandResponseFuzzTest is BillingFixture {
    uint256 internal constant METERS = 3;
    address[METERS] internal meters;

    function setUp() public {
        _deploy();
        for (uint256 i = 0; i < METERS; ++i) {
            meters[i] = vm.addr(_key(i));
            billing.registerMeter(meters[i], bytes32(i), i == 2 ? bytes32("south") : bytes32("north"), 0, 0);
        }
    }

    function _terms(uint256 startIn, uint256 periods, uint32 rate) internal view returns (DemandResponse.Terms memory) {
        uint256 start = (clock / PERIOD + 1 + startIn) * PERIOD;
        return DemandResponse.Terms(uint32(start), uint32(periods * PERIOD), 3600, 0, 2, rate);
    }

    function _byRegion(DemandResponse.Terms memory t) internal returns (uint64) {
        bytes32[] memory regions = new bytes32[](1);
        regions[0] = bytes32("north");
        return dr.createEvent(bytes32("flex"), t, regions, new address[](0));
    }

    function testFuzz_createEvent(uint16 startIn, uint8 periods, uint32 rate, bool byMeter, uint8 level) public {
        DemandResponse.Terms memory t = _terms(_bound(startIn, 0, 1000), _bound(periods, 1, 48), rate);
        t.signalValue = uint32(_bound(level, 0, 3));
        uint64 id;
        if (byMeter) {
            address[] memory targets = new address[](1);
            targets[0] = meters[2];
            id = dr.createEvent(bytes32("flex"), t, new bytes32[](0), targets);
        } else {
            id = _byRegion(t);
        }
        _eq(id, dr.eventCount(), "ids count up");
        (DemandResponse.Terms memory kept, bytes32 programme, uint32 modification, uint64 noticeAt,) = dr.eventOf(id);
        require(keccak256(abi.encode(kept)) == keccak256(abi.encode(t)), "terms kept");
        require(programme == bytes32("flex") && modification == 0 && noticeAt == clock, "bookkeeping");
        require(dr.isTargeted(id, meters[0]) != byMeter && dr.isTargeted(id, meters[2]) == byMeter, "targets");
        require(!dr.isTargeted(id, meters[1]) || !byMeter, "a meter not listed is not targeted");
        _warp(t.start);
        require(dr.statusOf(id) == DemandResponse.Status.Active, "active from its start");
        _warp(uint256(t.start) + t.duration);
        require(dr.statusOf(id) == DemandResponse.Status.Completed, "completed at its end");
        t.start += 1;
        vm.expectRevert(
            abi.encodeWithSelector(DemandResponse.InvalidTerms.selector, t.start, t.duration, t.signalKind, t.signalValue)
        );
        dr.createEvent(bytes32("flex"), t, new bytes32[](1), new address[](0));
        t.start = uint32((clock / PERIOD + 1) * PERIOD);
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.InvalidTarget.selector, 1, 1));
        dr.createEvent(bytes32("flex"), t, new bytes32[](1), new address[](1));
    }

    function _north() internal pure returns (bytes32[] memory regions) {
        regions = new bytes32[](1);
        regions[0] = bytes32("north");
    }

    function testFuzz_modifyEvent(uint8 periods, uint32 rate, uint16 startIn) public {
        uint64 id = _byRegion(_terms(10, 2, 100));
        DemandResponse.Terms memory t = _terms(_bound(startIn, 0, 1000), _bound(periods, 1, 48), rate);
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.TargetMismatch.selector, id));
        dr.modifyEvent(id, t, new bytes32[](0), new address[](0));
        vm.recordLogs();
        dr.modifyEvent(id, t, _north(), new address[](0));
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs[0].topics[0] == DemandResponse.DemandResponseEvent.selector, "announced");
        (,,,, bytes32[] memory regions, address[] memory targets) =
            abi.decode(logs[0].data, (uint32, bytes32, uint64, DemandResponse.Terms, bytes32[], address[]));
        require(regions.length == 1 && regions[0] == bytes32("north") && targets.length == 0, "the event carries its target");
        (DemandResponse.Terms memory kept,, uint32 modification,,) = dr.eventOf(id);
        require(keccak256(abi.encode(kept)) == keccak256(abi.encode(t)) && modification == 1, "changed, number up");
        require(dr.isTargeted(id, meters[0]) && !dr.isTargeted(id, meters[2]), "same target");
        _warp(t.start);
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.EventStarted.selector, id, t.start, uint64(t.start)));
        dr.modifyEvent(id, t, _north(), new address[](0));
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.UnknownEvent.selector, id + 1));
        dr.modifyEvent(id + 1, t, _north(), new address[](0));
    }

    function testFuzz_cancelEvent(uint16 startIn) public {
        DemandResponse.Terms memory t = _terms(_bound(startIn, 0, 1000), 2, 100);
        uint64 id = _byRegion(t);
        dr.cancelEvent(id);
        require(dr.statusOf(id) == DemandResponse.Status.Cancelled, "cancelled");
        (,, uint32 modification,,) = dr.eventOf(id);
        _eq(modification, 1, "modification");
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.EventCancelled.selector, id));
        dr.cancelEvent(id);
        _warp(uint256(t.start) + t.duration);
        DemandResponse.Credit[] memory credits = new DemandResponse.Credit[](1);
        credits[0] = DemandResponse.Credit(meters[0], 10, 5);
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.EventCancelled.selector, id));
        dr.credit(id, credits);
    }

    /// @dev An opt-out is signed for the event's id, modification and terms: a change of the event lapses it.
    function testFuzz_optOut(uint8 who, uint256 otherKey) public {
        otherKey = _bound(otherKey, 1, SECP256K1_ORDER - 1);
        uint256 i = _bound(who, 0, METERS - 1);
        DemandResponse.Terms memory t = _terms(4, 2, 100);
        uint64 id = _byRegion(t);
        address meter = meters[i];
        bytes memory signature = _optOutSignature(_key(i), meter, id, 0, t);
        if (i == 2) {
            vm.expectRevert(abi.encodeWithSelector(DemandResponse.NotTargeted.selector, id, meter));
            dr.optOut(id, meter, 0, signature);
            return;
        }
        if (otherKey != _key(i)) {
            vm.expectRevert(
                abi.encodeWithSelector(DemandResponse.BadSignature.selector, meter, vm.addr(otherKey))
            );
            dr.optOut(id, meter, 0, _optOutSignature(otherKey, meter, id, 0, t));
        }
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.StaleModification.selector, id, uint32(1), uint32(0)));
        dr.optOut(id, meter, 1, signature);
        vm.prank(address(0xbeef));
        dr.optOut(id, meter, 0, signature);
        _eq(dr.participation(id, meter), 1, "opted out");
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.AlreadyOptedOut.selector, id, meter));
        dr.optOut(id, meter, 0, signature);
        // A change of the terms lapses the opt-out; the old signature no longer verifies.
        DemandResponse.Terms memory changed = _terms(4, 3, 100);
        dr.modifyEvent(id, changed, _north(), new address[](0));
        _eq(dr.participation(id, meter), 0, "lapsed with the change");
        vm.expectRevert();
        dr.optOut(id, meter, 1, signature);
        dr.optOut(id, meter, 1, _optOutSignature(_key(i), meter, id, 1, changed));
        _eq(dr.participation(id, meter), 1, "opted out of the new terms");
        _warp(uint256(changed.start) + changed.duration);
        DemandResponse.Credit[] memory credits = new DemandResponse.Credit[](1);
        credits[0] = DemandResponse.Credit(meter, 10, 5);
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.MeterOptedOut.selector, id, meter));
        dr.credit(id, credits);
    }

    /// @dev A signed withdrawal before the start makes the meter take part again, for good for those terms.
    function testFuzz_withdrawOptOut(uint8 who, uint8 startIn) public {
        uint256 i = _bound(who, 0, 1);
        DemandResponse.Terms memory t = _terms(_bound(startIn, 1, 100), 2, 100);
        uint64 id = _byRegion(t);
        address meter = meters[i];
        bytes memory withdrawal = _withdrawalSignature(_key(i), meter, id, 0, t);
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.NotOptedOut.selector, id, meter));
        dr.withdrawOptOut(id, meter, 0, withdrawal);
        bytes memory optOut = _optOutSignature(_key(i), meter, id, 0, t);
        dr.optOut(id, meter, 0, optOut);
        vm.expectRevert();
        dr.withdrawOptOut(id, meter, 0, optOut); // an opt-out's signature is not a withdrawal's
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.StaleModification.selector, id, uint32(1), uint32(0)));
        dr.withdrawOptOut(id, meter, 1, withdrawal);
        vm.recordLogs();
        vm.prank(address(0xbeef));
        dr.withdrawOptOut(id, meter, 0, withdrawal);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        require(logs[0].topics[0] == DemandResponse.OptOutWithdrawn.selector, "withdrawn");
        _eq(dr.participation(id, meter), 3, "withdrawn");
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.OptOutWasWithdrawn.selector, id, meter));
        dr.optOut(id, meter, 0, optOut);
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.NotOptedOut.selector, id, meter));
        dr.withdrawOptOut(id, meter, 0, withdrawal);
        _warp(t.start);
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.EventStarted.selector, id, t.start, uint64(t.start)));
        dr.withdrawOptOut(id, meter, 0, withdrawal);
        _warp(uint256(t.start) + t.duration);
        DemandResponse.Credit[] memory credits = new DemandResponse.Credit[](1);
        credits[0] = DemandResponse.Credit(meter, 10, 5);
        dr.credit(id, credits);
        _eq(dr.participation(id, meter), 2, "credited after the withdrawal");
    }

    /// @notice A credit is the reduction at the event's rate, filed under the meter's open period.
    /// @dev A baseline above max power x window (`creditBoundWh`) is refused, so no credit exceeds that at the
    /// event's rate; BillingInvariants' handler holds the bound too.
    function testFuzz_credit(uint64 baseline, uint64 actual, uint32 rate, uint8 periods, uint64 over) public {
        periods = uint8(_bound(periods, 1, 8));
        DemandResponse.Terms memory t = _terms(1, periods, rate);
        uint64 id = _byRegion(t);
        uint256 most = _creditBoundWh(t.duration);
        _eq(dr.creditBoundWh(id), most, "the bound: max power x window");
        baseline = uint64(_bound(baseline, 0, most));
        actual = uint64(_bound(actual, 0, most));
        DemandResponse.Credit[] memory credits = new DemandResponse.Credit[](1);
        credits[0] = DemandResponse.Credit(meters[0], baseline, actual);
        vm.expectRevert(
            abi.encodeWithSelector(
                DemandResponse.EventNotCompleted.selector, id, uint64(t.start) + t.duration, uint64(clock)
            )
        );
        dr.credit(id, credits);
        _warp(uint256(t.start) + t.duration);
        uint64 above = uint64(most + _bound(over, 1, type(uint64).max - most));
        DemandResponse.Credit[] memory tooMuch = new DemandResponse.Credit[](1);
        tooMuch[0] = DemandResponse.Credit(meters[0], above, 0);
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.CreditAboveBound.selector, id, meters[0], above, most));
        dr.credit(id, tooMuch);
        dr.credit(id, credits);
        uint256 expected = baseline > actual ? (uint256(baseline) - actual) * rate : 0;
        _eq(dr.creditOf(meters[0], 1), expected, "credit: reduction x rate");
        require(_creditWithinBound(expected, t.duration, rate), "within max power x window x rate");
        _eq(dr.participation(id, meters[0]), 2, "credited");
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.AlreadyCredited.selector, id, meters[0]));
        dr.credit(id, credits);
        credits[0].meter = meters[2];
        vm.expectRevert(abi.encodeWithSelector(DemandResponse.NotTargeted.selector, id, meters[2]));
        dr.credit(id, credits);
    }

    function testFuzz_rolesGuardEveryWritingFunction(address caller, uint8 which) public {
        vm.assume(caller != address(this));
        require(dr.domainSeparator() == _domain("DemandResponse", address(dr)), "domain");
        require(address(dr.billing()) == address(billing) && dr.supportsInterface(0x7965db0b), "billing, ERC-165");
        require(dr.hasRole(dr.SETTLER_ROLE(), address(this)) && !dr.hasRole(dr.SETTLER_ROLE(), caller), "roles");
        which = uint8(_bound(which, 0, 3));
        _eq(dr.maxPowerW(), MAX_POWER_W, "the billing contract's bound");
        bytes32 role = which == 3 ? dr.SETTLER_ROLE() : dr.GRID_OPERATOR_ROLE();
        DemandResponse.Terms memory t;
        bytes memory call;
        if (which == 0) call = abi.encodeCall(dr.createEvent, (bytes32(0), t, new bytes32[](0), new address[](0)));
        if (which == 1) call = abi.encodeCall(dr.modifyEvent, (1, t, new bytes32[](0), new address[](0)));
        if (which == 2) call = abi.encodeCall(dr.cancelEvent, (1));
        if (which == 3) call = abi.encodeCall(dr.credit, (1, new DemandResponse.Credit[](0)));
        _requireRefusedForWantOfRole(address(dr), caller, call, role);
    }
}
