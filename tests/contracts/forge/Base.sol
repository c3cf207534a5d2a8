// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {SmartMeterBilling} from "../../../contracts/SmartMeterBilling.sol";
import {DemandResponse} from "../../../contracts/DemandResponse.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Vm, VM_ADDRESS} from "./Vm.sol";

/// @title ReferenceTariff
/// @notice An independent model of the tariff schedule and of the pricing rule, written from the
/// contract's NatSpec and docs/tariffs.md, not from its code: the versions and day-ahead prices the
/// tests set are mirrored here, and `_refSplit` prices a reading by the rule (the energy split over the
/// settlement periods it spans in proportion to time by cumulative floors, each part at its period's
/// price) with none of the contract's shortcuts (no cache, no skipped periods, no closed form).
/// @dev Band clocks are GMT here (the tests publish no clock changes).
abstract contract ReferenceTariff {
    struct RefVersion {
        uint32 from;
        uint32 standingCharge;
        uint8 importKind;
        uint32 importRate;
        uint256 importBands;
        uint256 importBandRates;
        uint8 exportKind;
        uint32 exportRate;
        uint256 exportBands;
        uint256 exportBandRates;
    }

    uint256 internal constant PERIOD = 1800;
    RefVersion[] internal refVersions;
    /// @dev Day-ahead prices by period and side (0 import, 1 export), stored + 1 (0: none published).
    mapping(uint256 period => mapping(uint256 side => uint256 pricePlusOne)) internal refDayAhead;

    function _refAddVersion(SmartMeterBilling.Tariff memory t) internal {
        refVersions.push(
            RefVersion(
                t.effectiveFrom,
                t.standingCharge,
                t.importKind,
                t.importRate,
                t.importBands,
                t.importBandRates,
                t.exportKind,
                t.exportRate,
                t.exportBands,
                t.exportBandRates
            )
        );
    }

    function _refSide(uint8 kind, uint32 rate, uint256 bands, uint256 bandRates, uint256 p, uint256 side)
        private
        view
        returns (uint256)
    {
        if (kind == 0) return rate;
        if (kind == 1) {
            uint256 halfHour = p % 48;
            uint256 band = (bands / (8 ** halfHour)) % 8;
            return (bandRates / (2 ** (32 * band))) % (2 ** 32);
        }
        uint256 published = refDayAhead[p][side];
        return published == 0 ? rate : published - 1;
    }

    /// @notice The model's import and export prices of settlement period `p`.
    function _refPrice(uint256 p) internal view returns (uint256 importPrice, uint256 exportPrice) {
        uint256 start = p * PERIOD;
        uint256 k = 0;
        for (uint256 i = 0; i < refVersions.length; ++i) {
            if (refVersions[i].from <= start) k = i;
        }
        RefVersion storage v = refVersions[k];
        importPrice = _refSide(v.importKind, v.importRate, v.importBands, v.importBandRates, p, 0);
        exportPrice = _refSide(v.exportKind, v.exportRate, v.exportBands, v.exportBandRates, p, 1);
    }

    /// @notice The model's cost and credit of `dImport` and `dExport` Wh used over [t0, t1), in micropence.
    function _refSplit(uint256 t0, uint256 t1, uint256 dImport, uint256 dExport)
        internal
        view
        returns (uint256 cost, uint256 credit)
    {
        uint256 span = t1 - t0;
        uint256 doneImport;
        uint256 doneExport;
        for (uint256 p = t0 / PERIOD; p * PERIOD < t1; ++p) {
            uint256 end = (p + 1) * PERIOD < t1 ? (p + 1) * PERIOD : t1;
            uint256 cumImport = dImport * (end - t0) / span;
            uint256 cumExport = dExport * (end - t0) / span;
            (uint256 importPrice, uint256 exportPrice) = _refPrice(p);
            cost += (cumImport - doneImport) * importPrice;
            credit += (cumExport - doneExport) * exportPrice;
            doneImport = cumImport;
            doneExport = cumExport;
        }
    }

    /// @notice The model's standing charge for [start, end): each version's daily charge for the seconds
    /// it was in force, rounded down once, in micropence.
    /// @notice Withdraws the model's newest version (as `withdrawTariff` does the contract's).
    function _refWithdrawVersion() internal {
        refVersions.pop();
    }

    function _refStanding(uint256 start, uint256 end) internal view returns (uint256 total) {
        for (uint256 i = 0; i < refVersions.length; ++i) {
            uint256 from = refVersions[i].from;
            uint256 to = i + 1 < refVersions.length ? refVersions[i + 1].from : type(uint256).max;
            if (from < start) from = start;
            if (to > end) to = end;
            if (to > from) total += (to - from) * refVersions[i].standingCharge;
        }
        return total * 1000 / 86_400;
    }
}

/// @title BillingFixture
/// @notice Deploys the two contracts with this contract holding every role, and signs meters' readings
/// and opt-outs with Foundry's `sign` cheatcode.
abstract contract BillingFixture is ReferenceTariff {
    Vm internal constant vm = Vm(VM_ADDRESS);

    uint32 internal constant UNIT_RATE = 24_500;
    uint32 internal constant STANDING = 60_000;
    uint32 internal constant EXPORT_RATE = 15_000;
    uint64 internal constant MAX_POWER_W = 24_000;
    uint64 internal constant SKEW = 300;
    uint256 internal constant SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    /// @dev 00:00 UTC on 16 June 2025: the tests' time starts at a period boundary.
    uint256 internal constant T0 = 1_750_032_000;

    SmartMeterBilling internal billing;
    DemandResponse internal dr;
    /// @notice The tests' time. Tests read it, never `block.timestamp`: via IR the optimiser may read the
    /// TIMESTAMP opcode again after a `warp`, so a time taken before one can come out as the time after it.
    uint256 internal clock;

    /// @notice The EIP-712 domain type hash both contracts use (OpenZeppelin's EIP712).
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    /// @notice Sets the tests' time and the block's.
    function _warp(uint256 t) internal {
        clock = t;
        vm.warp(t);
    }

    function _deploy() internal {
        _warp(T0);
        // Deployed from forge's artifacts, not with `new`: a test then never embeds (and recompiles via IR)
        // the contracts' bytecode, so editing a test rebuilds in seconds.
        billing = SmartMeterBilling(
            vm.deployCode(
                "SmartMeterBilling.sol:SmartMeterBilling",
                abi.encode(
                    address(this), UNIT_RATE, STANDING, EXPORT_RATE, MAX_POWER_W, SKEW, new SmartMeterBilling.ClockChange[](0)
                )
            )
        );
        SmartMeterBilling.Tariff memory opening;
        opening.standingCharge = STANDING;
        opening.importRate = UNIT_RATE;
        opening.exportRate = EXPORT_RATE;
        _refAddVersion(opening);
        billing.grantRole(billing.OPERATOR_ROLE(), address(this));
        billing.grantRole(billing.GATEWAY_ROLE(), address(this));
        billing.grantRole(billing.GRID_OPERATOR_ROLE(), address(this));
        dr = DemandResponse(vm.deployCode("DemandResponse.sol:DemandResponse", abi.encode(address(this), address(billing))));
        dr.grantRole(dr.GRID_OPERATOR_ROLE(), address(this));
        dr.grantRole(dr.SETTLER_ROLE(), address(this));
    }

    /// @notice The private key of test meter `i`.
    function _key(uint256 i) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode("forge meter", i))) % (SECP256K1_ORDER - 1) + 1;
    }

    function _domain(string memory name, address verifying) internal view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256(bytes(name)), keccak256("1"), block.chainid, verifying));
    }

    /// @notice One packed, signed reading record for `submitReadings` (104 bytes, EIP-2098 signature).
    function _record(uint256 key, uint256 seq, uint256 timestamp, uint256 importWh, uint256 exportWh)
        internal
        view
        returns (bytes memory)
    {
        address meter = vm.addr(key);
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Reading(address meter,uint64 seq,uint64 timestamp,uint64 energyWh,uint64 exportWh)"),
                meter,
                seq,
                timestamp,
                importWh,
                exportWh
            )
        );
        bytes32 digest =
            keccak256(abi.encodePacked("\x19\x01", _domain("SmartMeterBilling", address(billing)), structHash));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        bytes32 vs = bytes32(uint256(s) | (uint256(v - 27) << 255));
        return abi.encodePacked(meter, uint32(seq), uint32(timestamp), uint48(importWh), uint48(exportWh), r, vs);
    }

    /// @notice EIP-712 type hash of an event's terms, as opt-outs and their withdrawals sign them.
    bytes32 internal constant TERMS_TYPEHASH = keccak256(
        "Terms(uint32 start,uint32 duration,uint32 rampUp,uint8 signalKind,uint32 signalValue,uint32 creditRate)"
    );

    /// @notice `key`'s signature of `meter`'s opt-out of event `id`'s terms `t` at `modification` (65 bytes).
    function _optOutSignature(uint256 key, address meter, uint64 id, uint32 modification, DemandResponse.Terms memory t)
        internal
        view
        returns (bytes memory)
    {
        return _partSignature(
            "OptOut(address meter,uint64 eventId,uint32 modification,Terms terms)", key, meter, id, modification, t
        );
    }

    /// @notice `key`'s signature of `meter`'s withdrawal of its opt-out of event `id`'s terms `t` at `modification`.
    function _withdrawalSignature(
        uint256 key,
        address meter,
        uint64 id,
        uint32 modification,
        DemandResponse.Terms memory t
    ) internal view returns (bytes memory) {
        return _partSignature(
            "OptOutWithdrawal(address meter,uint64 eventId,uint32 modification,Terms terms)", key, meter, id, modification, t
        );
    }

    /// @dev The typed data both sign: the primary type, then the nested Terms type (EIP-712's encodeType).
    function _partSignature(
        string memory primary,
        uint256 key,
        address meter,
        uint64 id,
        uint32 modification,
        DemandResponse.Terms memory t
    ) private view returns (bytes memory) {
        bytes32 typeHash = keccak256(
            abi.encodePacked(
                primary,
                "Terms(uint32 start,uint32 duration,uint32 rampUp,uint8 signalKind,uint32 signalValue,uint32 creditRate)"
            )
        );
        bytes32 termsHash = keccak256(
            abi.encode(TERMS_TYPEHASH, t.start, t.duration, t.rampUp, t.signalKind, t.signalValue, t.creditRate)
        );
        bytes32 structHash = keccak256(abi.encode(typeHash, meter, id, modification, termsHash));
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", _domain("DemandResponse", address(dr)), structHash));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    /// @notice The meter's state as (seq, timestamp, import register, export register).
    function _state(address meter) internal view returns (uint256 seq, uint256 ts, uint256 imp, uint256 exp) {
        (,,,, uint64 s, uint64 t, uint64 i, uint64 e) = billing.meterState(meter);
        return (s, t, i, e);
    }

    /// @notice The open bill's import cost and export credit.
    function _bill(address meter) internal view returns (uint256 cost, uint256 credit) {
        (,,,,, uint64 c, uint64 x,,) = billing.openBill(meter);
        return (c, x);
    }

    /// @notice The physical bound on a demand-response baseline, as the contract's `creditBoundWh`: what the
    /// supply can deliver over the window, max power x duration / 3600 Wh, rounded down.
    function _creditBoundWh(uint256 duration) internal pure returns (uint256) {
        return uint256(MAX_POWER_W) * duration / 3600;
    }

    /// @notice Whether a credit of `amount` micropence is within the bound: at most the bound's energy at the
    /// event's rate (a baseline is refused above `_creditBoundWh`, and a credit is at most baseline x rate).
    function _creditWithinBound(uint256 amount, uint256 duration, uint256 rate) internal pure returns (bool) {
        return amount <= _creditBoundWh(duration) * rate;
    }

    /// @notice `call` from `caller` to `target` is refused with OpenZeppelin's error for want of `role`.
    function _requireRefusedForWantOfRole(address target, address caller, bytes memory call, bytes32 role) internal {
        vm.prank(caller);
        (bool ok, bytes memory reason) = target.call(call);
        require(!ok, "refused");
        require(
            keccak256(reason)
                == keccak256(abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role)),
            "refused for want of the role"
        );
    }

    function _bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        return lo + x % (hi - lo + 1);
    }

    function _eq(uint256 a, uint256 b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": ", _str(a), " != ", _str(b)));
    }

    function _str(uint256 x) internal pure returns (string memory s) {
        if (x == 0) return "0";
        while (x != 0) {
            s = string.concat(string(abi.encodePacked(bytes1(uint8(48 + x % 10)))), s);
            x /= 10;
        }
    }
}
