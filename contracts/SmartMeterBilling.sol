// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title SmartMeterBilling
/// @notice The source of truth for meters, tariffs, readings, live bills and grid alerts.
/// @dev Units: energy in watt-hours (Wh); tariff rates in millipence (1/1000 p) per kWh and per
/// day; accrued amounts in micropence (1/1,000,000 p). Sequence numbers and timestamps fit 32 bits,
/// registers 48 bits (larger values are rejected as `OutOfRange`). Energy cost is exact
/// (Wh x millipence/kWh = micropence); the standing charge for the time between two readings is
/// rounded down to the micropence. Meters sign each reading as EIP-712 typed data; the gateway
/// relays batches and pays the gas but cannot forge or alter a reading.
contract SmartMeterBilling is AccessControl, EIP712 {
    /// @notice Registers, deactivates and reactivates meters, sets tariffs, closes billing periods.
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    /// @notice Submits batches of meter-signed readings.
    bytes32 public constant GATEWAY_ROLE = keccak256("GATEWAY_ROLE");
    /// @notice Raises and clears grid alerts.
    bytes32 public constant GRID_OPERATOR_ROLE = keccak256("GRID_OPERATOR_ROLE");

    /// @notice EIP-712 type hash of a reading.
    bytes32 public constant READING_TYPEHASH =
        keccak256("Reading(address meter,uint64 seq,uint64 timestamp,uint64 energyWh)");

    /// @notice Largest batch `submitReadings` accepts, to stay far below the block gas limit.
    uint256 public constant MAX_BATCH = 250;

    uint256 private constant SECONDS_PER_DAY = 86_400;
    uint256 private constant MICRO_PER_MILLI = 1_000;

    /// @notice Why a reading was not recorded (carried by `ReadingRejected`).
    enum RejectReason {
        None,
        BadSignature,
        MeterNotActive,
        StaleSequence,
        StaleTimestamp,
        FutureTimestamp,
        RegisterDecreased,
        ImplausibleDelta,
        OutOfRange,
        PeriodOverflow
    }

    /// @notice One cumulative register reading, as the meter signs it.
    struct Reading {
        address meter;
        uint64 seq;
        uint64 timestamp;
        uint64 energyWh;
    }

    /// @dev The per-reading state of a meter. Stored packed into one word (see `_pack`), so that a
    /// reading costs one storage read and one storage write.
    struct MeterState {
        bool active;
        uint32 lastSeq;
        uint32 lastTimestamp;
        uint48 lastEnergyWh;
        uint48 periodEnergyWh;
        uint48 periodEnergyCost;
        uint40 periodStandingCharge;
    }

    /// @dev What a meter keeps that readings do not touch.
    struct MeterInfo {
        bytes32 accountRef;
        bytes32 region;
        uint32 periodStart;
        uint32 periodId;
        bool registered;
    }

    /// @notice The tariff in force, in one slot.
    struct Tariff {
        uint32 unitRate;
        uint32 standingCharge;
        uint32 effectiveFrom;
        uint32 version;
    }

    /// @dev A grid alert's bookkeeping; its text lives in the `GridAlert` event.
    struct Alert {
        uint64 expiresAt;
        bool active;
    }

    /// @notice Greatest plausible supply power in watts (a reading implying more is rejected).
    uint64 public immutable maxPowerW;
    /// @notice Seconds a reading's timestamp may lie ahead of the block's.
    uint64 public immutable maxFutureSkew;

    mapping(address meter => uint256 packedState) private _state;
    mapping(address meter => MeterInfo) private _info;
    address[] private _meters;
    Tariff private _tariff;
    mapping(uint64 id => Alert) private _alerts;
    uint64 private _nextAlertId;

    /// @notice Emitted when a meter is registered.
    event MeterRegistered(
        address indexed meter, bytes32 accountRef, bytes32 region, uint64 openingWh, uint64 openedAt
    );
    /// @notice Emitted when a meter is deactivated: its readings are rejected until reactivated.
    event MeterDeactivated(address indexed meter);
    /// @notice Emitted when a deactivated meter is reactivated.
    event MeterReactivated(address indexed meter);
    /// @notice Emitted when the operator sets a new tariff; it applies to readings recorded after it.
    event TariffChanged(uint32 indexed version, uint32 unitRate, uint32 standingCharge, uint64 effectiveFrom);
    /// @notice Emitted when a reading is recorded.
    event ReadingRecorded(address indexed meter, uint64 seq, uint64 timestamp, uint64 energyWh);
    /// @notice Emitted when a reading in a batch is rejected; the rest of the batch goes on.
    event ReadingRejected(address indexed meter, uint64 seq, RejectReason reason);
    /// @notice Emitted with the open period's totals each time a reading is recorded.
    event BillUpdated(address indexed meter, uint64 seq, uint64 periodEnergyWh, uint64 amountDue);
    /// @notice Emitted when the operator closes a billing period and issues its bill.
    event BillIssued(
        address indexed meter,
        uint32 periodId,
        uint64 periodStart,
        uint64 periodEnd,
        uint64 energyWh,
        uint64 energyCost,
        uint64 standingCharge,
        uint64 amountDue
    );
    /// @notice Emitted when the grid operator raises an alert (region zero means every region).
    event GridAlert(
        uint64 indexed id, uint8 severity, bytes32 kind, bytes32 region, string message, uint64 expiresAt
    );
    /// @notice Emitted when the grid operator clears an alert.
    event GridAlertCleared(uint64 indexed id);

    /// @notice Thrown when an address argument is zero.
    error ZeroAddress();
    /// @notice Thrown when registering a meter that is already registered.
    error MeterAlreadyRegistered(address meter);
    /// @notice Thrown when an operation names a meter that was never registered.
    error UnknownMeter(address meter);
    /// @notice Thrown when deactivating a meter that is not active.
    error MeterNotActive(address meter);
    /// @notice Thrown when reactivating a meter that is already active.
    error MeterAlreadyActive(address meter);
    /// @notice Thrown when a meter's opening date lies in the future.
    error OpeningInFuture(uint64 openedAt, uint64 blockTimestamp);
    /// @notice Thrown when a value does not fit the packed field that stores it.
    error ValueTooLarge(uint256 value, uint256 max);
    /// @notice Thrown when a tariff has a zero unit rate.
    error InvalidTariff(uint32 unitRate, uint32 standingCharge);
    /// @notice Thrown when parallel array arguments differ in length.
    error LengthMismatch(uint256 readings, uint256 signatures);
    /// @notice Thrown when a batch (of readings or registrations) is empty or larger than `MAX_BATCH`.
    error BadBatchSize(uint256 size, uint256 max);
    /// @notice Thrown when closing a period in which no reading was recorded.
    error EmptyBillingPeriod(address meter, uint32 periodId);
    /// @notice Thrown when an alert's expiry is not in the future.
    error InvalidExpiry(uint64 expiresAt, uint64 blockTimestamp);
    /// @notice Thrown when an alert's severity is outside 0 (info) .. 2 (critical).
    error InvalidSeverity(uint8 severity);
    /// @notice Thrown when clearing an alert that does not exist or is already cleared.
    error AlertNotActive(uint64 id);

    /// @param admin Holds DEFAULT_ADMIN_ROLE and can grant the other roles.
    /// @param unitRate Opening unit rate in millipence per kWh.
    /// @param standingCharge Opening standing charge in millipence per day.
    /// @param maxPowerW_ Greatest plausible supply power in watts.
    /// @param maxFutureSkew_ Seconds a reading may be ahead of the block timestamp.
    constructor(address admin, uint32 unitRate, uint32 standingCharge, uint64 maxPowerW_, uint64 maxFutureSkew_)
        EIP712("SmartMeterBilling", "1")
    {
        if (admin == address(0)) revert ZeroAddress();
        maxPowerW = maxPowerW_;
        maxFutureSkew = maxFutureSkew_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _setTariff(unitRate, standingCharge);
    }

    // ------------------------------------------------------------------ meters

    /// @notice Registers a meter with its opening register value.
    /// @dev The opening date lets a meter installed in the past receive its history.
    /// @param meter The meter's signing address.
    /// @param accountRef An opaque account reference (never personal data).
    /// @param region The grid region the meter is in (short text, right-padded).
    /// @param openingWh The register value at opening, in Wh.
    /// @param openedAt When the opening value was read (0 for now); starts the first billing period.
    function registerMeter(address meter, bytes32 accountRef, bytes32 region, uint64 openingWh, uint64 openedAt)
        external
        onlyRole(OPERATOR_ROLE)
    {
        _register(meter, accountRef, region, openingWh, openedAt);
    }

    /// @notice Registers several meters in one transaction (provisioning a fleet).
    /// @param meters The meters' signing addresses.
    /// @param accountRefs One opaque account reference per meter.
    /// @param regions One grid region per meter.
    /// @param openingWh One opening register value per meter, in Wh.
    /// @param openedAt When the opening values were read (0 for now), shared by all.
    function registerMeters(
        address[] calldata meters,
        bytes32[] calldata accountRefs,
        bytes32[] calldata regions,
        uint64[] calldata openingWh,
        uint64 openedAt
    ) external onlyRole(OPERATOR_ROLE) {
        uint256 n = meters.length;
        if (accountRefs.length != n || regions.length != n || openingWh.length != n) {
            revert LengthMismatch(n, accountRefs.length);
        }
        if (n == 0 || n > MAX_BATCH) revert BadBatchSize(n, MAX_BATCH);
        for (uint256 i = 0; i < n; ++i) {
            _register(meters[i], accountRefs[i], regions[i], openingWh[i], openedAt);
        }
    }

    function _register(address meter, bytes32 accountRef, bytes32 region, uint64 openingWh, uint64 openedAt)
        private
    {
        if (meter == address(0)) revert ZeroAddress();
        MeterInfo storage info = _info[meter];
        if (info.registered) revert MeterAlreadyRegistered(meter);
        if (openedAt == 0) openedAt = uint64(block.timestamp);
        if (openedAt > block.timestamp) revert OpeningInFuture(openedAt, uint64(block.timestamp));
        if (openingWh > type(uint48).max) revert ValueTooLarge(openingWh, type(uint48).max);

        info.registered = true;
        info.accountRef = accountRef;
        info.region = region;
        info.periodStart = uint32(openedAt);
        info.periodId = 1;
        _state[meter] = _pack(
            MeterState({
                active: true,
                lastSeq: 0,
                lastTimestamp: uint32(openedAt),
                lastEnergyWh: uint48(openingWh),
                periodEnergyWh: 0,
                periodEnergyCost: 0,
                periodStandingCharge: 0
            })
        );
        _meters.push(meter);
        emit MeterRegistered(meter, accountRef, region, openingWh, openedAt);
    }

    /// @notice Deactivates a meter: its readings are rejected until it is reactivated.
    /// @param meter The meter to deactivate.
    function deactivateMeter(address meter) external onlyRole(OPERATOR_ROLE) {
        if (!_info[meter].registered) revert UnknownMeter(meter);
        MeterState memory s = _unpack(_state[meter]);
        if (!s.active) revert MeterNotActive(meter);
        s.active = false;
        _state[meter] = _pack(s);
        emit MeterDeactivated(meter);
    }

    /// @notice Reactivates a deactivated meter.
    /// @param meter The meter to reactivate.
    function reactivateMeter(address meter) external onlyRole(OPERATOR_ROLE) {
        if (!_info[meter].registered) revert UnknownMeter(meter);
        MeterState memory s = _unpack(_state[meter]);
        if (s.active) revert MeterAlreadyActive(meter);
        s.active = true;
        _state[meter] = _pack(s);
        emit MeterReactivated(meter);
    }

    // ------------------------------------------------------------------ tariff

    /// @notice Sets the tariff for readings recorded from now on.
    /// @param unitRate Unit rate in millipence per kWh (must be non-zero).
    /// @param standingCharge Daily standing charge in millipence.
    function setTariff(uint32 unitRate, uint32 standingCharge) external onlyRole(OPERATOR_ROLE) {
        _setTariff(unitRate, standingCharge);
    }

    function _setTariff(uint32 unitRate, uint32 standingCharge) private {
        if (unitRate == 0) revert InvalidTariff(unitRate, standingCharge);
        uint32 version = _tariff.version + 1;
        _tariff = Tariff(unitRate, standingCharge, uint32(block.timestamp), version);
        emit TariffChanged(version, unitRate, standingCharge, uint64(block.timestamp));
    }

    // ------------------------------------------------------------------ readings

    /// @notice Records a batch of meter-signed readings; bad ones are rejected one by one.
    /// @dev Each reading is checked in turn against the state its predecessors in the batch left,
    /// so a batch may carry several readings of one meter in sequence order. A rejected reading
    /// emits `ReadingRejected` and changes nothing else.
    /// @param readings The readings, each signed by its meter as EIP-712 typed data.
    /// @param signatures One 65-byte signature (r, s, v) per reading, in the same order.
    function submitReadings(Reading[] calldata readings, bytes[] calldata signatures)
        external
        onlyRole(GATEWAY_ROLE)
    {
        uint256 n = readings.length;
        if (n != signatures.length) revert LengthMismatch(n, signatures.length);
        if (n == 0 || n > MAX_BATCH) revert BadBatchSize(n, MAX_BATCH);
        Tariff memory tariff = _tariff;
        for (uint256 i = 0; i < n; ++i) {
            _record(readings[i], signatures[i], tariff.unitRate, tariff.standingCharge);
        }
    }

    /// @dev The hot path: one storage read, one storage write, one ecrecover and two events per
    /// recorded reading. Fields are copied from calldata once and the packed word is worked on directly.
    function _record(Reading calldata r, bytes calldata signature, uint256 unitRate, uint256 standingRate) private {
        address meter = r.meter;
        uint256 seq = r.seq;
        uint256 timestamp = r.timestamp;
        uint256 energyWh = r.energyWh;
        uint256 word = _state[meter];
        RejectReason reason = _check(word, seq, timestamp, energyWh);
        if (reason == RejectReason.None && !_signedByMeter(meter, seq, timestamp, energyWh, signature)) {
            reason = RejectReason.BadSignature;
        }
        if (reason != RejectReason.None) {
            emit ReadingRejected(meter, uint64(seq), reason);
            return;
        }
        uint256 periodWh;
        uint256 energyCost;
        uint256 standing;
        unchecked {
            // _check bounds every operand: the register and timestamps only grow and fit 48 and 32 bits,
            // rates fit 32 bits, so no product or sum below can approach 2^256.
            uint256 deltaWh = energyWh - uint48(word >> 72);
            uint256 elapsed = timestamp - uint32(word >> 40);
            periodWh = uint48(word >> 120) + deltaWh;
            energyCost = uint48(word >> 168) + deltaWh * unitRate;
            standing = uint40(word >> 216) + (elapsed * standingRate * MICRO_PER_MILLI) / SECONDS_PER_DAY;
        }
        if (energyCost > type(uint48).max || standing > type(uint40).max || periodWh > type(uint48).max) {
            // The open period has outgrown its fields: the operator must close it first.
            emit ReadingRejected(meter, uint64(seq), RejectReason.PeriodOverflow);
            return;
        }
        _state[meter] = 1 | (seq << 8) | (timestamp << 40) | (energyWh << 72) | (periodWh << 120)
            | (energyCost << 168) | (standing << 216);
        emit ReadingRecorded(meter, uint64(seq), uint64(timestamp), uint64(energyWh));
        emit BillUpdated(meter, uint64(seq), uint64(periodWh), uint64(energyCost + standing));
    }

    /// @dev The contract's checks on a reading (all but the signature), on the packed state word.
    function _check(uint256 word, uint256 seq, uint256 timestamp, uint256 energyWh)
        private
        view
        returns (RejectReason)
    {
        if (word & 1 == 0) return RejectReason.MeterNotActive;
        if (seq > type(uint32).max || timestamp > type(uint32).max || energyWh > type(uint48).max) {
            return RejectReason.OutOfRange;
        }
        uint256 lastTimestamp = uint32(word >> 40);
        uint256 lastEnergyWh = uint48(word >> 72);
        if (seq <= uint32(word >> 8)) return RejectReason.StaleSequence;
        if (timestamp <= lastTimestamp) return RejectReason.StaleTimestamp;
        if (timestamp > block.timestamp + maxFutureSkew) return RejectReason.FutureTimestamp;
        if (energyWh < lastEnergyWh) return RejectReason.RegisterDecreased;
        // deltaWh x 3600 <= maxPowerW x elapsed seconds, kept in integers.
        if ((energyWh - lastEnergyWh) * 3600 > maxPowerW * (timestamp - lastTimestamp)) {
            return RejectReason.ImplausibleDelta;
        }
        return RejectReason.None;
    }

    /// @dev Whether `signature` is the meter's EIP-712 signature of the reading.
    function _signedByMeter(address meter, uint256 seq, uint256 readAt, uint256 energyWh, bytes calldata signature)
        private
        view
        returns (bool)
    {
        if (signature.length != 65) return false;
        bytes32 typeHash = READING_TYPEHASH;
        bytes32 structHash;
        bytes32 sigR;
        bytes32 sigS;
        uint8 v;
        assembly ("memory-safe") {
            // abi.encode(READING_TYPEHASH, meter, seq, timestamp, energyWh) in scratch memory past the free pointer.
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            mstore(add(ptr, 0x20), meter)
            mstore(add(ptr, 0x40), seq)
            mstore(add(ptr, 0x60), readAt)
            mstore(add(ptr, 0x80), energyWh)
            structHash := keccak256(ptr, 0xa0)
            sigR := calldataload(signature.offset)
            sigS := calldataload(add(signature.offset, 0x20))
            v := byte(0, calldataload(add(signature.offset, 0x40)))
        }
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(_hashTypedDataV4(structHash), v, sigR, sigS);
        return err == ECDSA.RecoverError.NoError && signer == meter;
    }

    /// @dev Bit layout, low to high: active (8), lastSeq (32), lastTimestamp (32), lastEnergyWh (48),
    /// periodEnergyWh (48), periodEnergyCost (48), periodStandingCharge (40) = 256 bits.
    function _pack(MeterState memory s) private pure returns (uint256 word) {
        word = (s.active ? 1 : 0) | (uint256(s.lastSeq) << 8) | (uint256(s.lastTimestamp) << 40)
            | (uint256(s.lastEnergyWh) << 72) | (uint256(s.periodEnergyWh) << 120)
            | (uint256(s.periodEnergyCost) << 168) | (uint256(s.periodStandingCharge) << 216);
    }

    function _unpack(uint256 word) private pure returns (MeterState memory s) {
        s.active = word & 1 == 1;
        s.lastSeq = uint32(word >> 8);
        s.lastTimestamp = uint32(word >> 40);
        s.lastEnergyWh = uint48(word >> 72);
        s.periodEnergyWh = uint48(word >> 120);
        s.periodEnergyCost = uint48(word >> 168);
        s.periodStandingCharge = uint40(word >> 216);
    }

    // ------------------------------------------------------------------ billing periods

    /// @notice Closes a meter's open billing period at its last reading and issues the bill.
    /// @param meter The meter whose period to close.
    function closeBillingPeriod(address meter) external onlyRole(OPERATOR_ROLE) {
        MeterInfo storage info = _info[meter];
        if (!info.registered) revert UnknownMeter(meter);
        MeterState memory s = _unpack(_state[meter]);
        uint32 periodId = info.periodId;
        uint64 periodStart = info.periodStart;
        uint64 periodEnd = s.lastTimestamp;
        if (periodEnd == periodStart) revert EmptyBillingPeriod(meter, periodId);
        uint64 energyWh = s.periodEnergyWh;
        uint64 energyCost = s.periodEnergyCost;
        uint64 standing = s.periodStandingCharge;

        s.periodEnergyWh = 0;
        s.periodEnergyCost = 0;
        s.periodStandingCharge = 0;
        _state[meter] = _pack(s);
        info.periodStart = uint32(periodEnd);
        info.periodId = periodId + 1;
        emit BillIssued(meter, periodId, periodStart, periodEnd, energyWh, energyCost, standing, energyCost + standing);
    }

    // ------------------------------------------------------------------ grid alerts

    /// @notice Broadcasts a grid alert through the chain.
    /// @param severity 0 info, 1 warning, 2 critical.
    /// @param kind What kind of alert (short text, e.g. "frequency_dip", "reduce_usage").
    /// @param region The region it concerns (zero for every region).
    /// @param message A plain-worded message for households.
    /// @param expiresAt When the alert lapses by itself (unix seconds, in the future).
    /// @return id The new alert's id.
    function raiseGridAlert(uint8 severity, bytes32 kind, bytes32 region, string calldata message, uint64 expiresAt)
        external
        onlyRole(GRID_OPERATOR_ROLE)
        returns (uint64 id)
    {
        if (severity > 2) revert InvalidSeverity(severity);
        if (expiresAt <= block.timestamp) revert InvalidExpiry(expiresAt, uint64(block.timestamp));
        id = ++_nextAlertId;
        _alerts[id] = Alert(expiresAt, true);
        emit GridAlert(id, severity, kind, region, message, expiresAt);
    }

    /// @notice Clears an active grid alert.
    /// @param id The alert to clear.
    function clearGridAlert(uint64 id) external onlyRole(GRID_OPERATOR_ROLE) {
        if (!_alerts[id].active) revert AlertNotActive(id);
        _alerts[id].active = false;
        emit GridAlertCleared(id);
    }

    // ------------------------------------------------------------------ views

    /// @notice A meter's registration and reading state.
    /// @param meter The meter.
    /// @return registered Whether the meter was ever registered.
    /// @return active Whether its readings are accepted.
    /// @return accountRef Its opaque account reference.
    /// @return region Its grid region.
    /// @return lastSeq The sequence number of its last recorded reading.
    /// @return lastTimestamp The timestamp of its last recorded reading (or its opening date).
    /// @return lastEnergyWh Its register at the last recorded reading, in Wh.
    function meterState(address meter)
        external
        view
        returns (
            bool registered,
            bool active,
            bytes32 accountRef,
            bytes32 region,
            uint64 lastSeq,
            uint64 lastTimestamp,
            uint64 lastEnergyWh
        )
    {
        MeterInfo storage info = _info[meter];
        MeterState memory s = _unpack(_state[meter]);
        return (info.registered, s.active, info.accountRef, info.region, s.lastSeq, s.lastTimestamp, s.lastEnergyWh);
    }

    /// @notice A meter's open billing period.
    /// @param meter The meter.
    /// @return periodId The period's number (1 for the first).
    /// @return periodStart When the period began.
    /// @return periodEnd The last reading's timestamp so far.
    /// @return energyWh Energy used in the period, in Wh.
    /// @return energyCost Energy charge in micropence.
    /// @return standingCharge Standing charge accrued in micropence.
    /// @return amountDue The sum of both, in micropence.
    function openBill(address meter)
        external
        view
        returns (
            uint32 periodId,
            uint64 periodStart,
            uint64 periodEnd,
            uint64 energyWh,
            uint64 energyCost,
            uint64 standingCharge,
            uint64 amountDue
        )
    {
        MeterInfo storage info = _info[meter];
        if (!info.registered) revert UnknownMeter(meter);
        MeterState memory s = _unpack(_state[meter]);
        return (
            info.periodId,
            info.periodStart,
            s.lastTimestamp,
            s.periodEnergyWh,
            s.periodEnergyCost,
            s.periodStandingCharge,
            uint64(s.periodEnergyCost) + s.periodStandingCharge
        );
    }

    /// @notice The tariff in force.
    /// @return unitRate Millipence per kWh.
    /// @return standingCharge Millipence per day.
    /// @return effectiveFrom When it was set.
    /// @return version Its version number (1 for the first).
    function tariff()
        external
        view
        returns (uint32 unitRate, uint32 standingCharge, uint64 effectiveFrom, uint32 version)
    {
        Tariff memory t = _tariff;
        return (t.unitRate, t.standingCharge, t.effectiveFrom, t.version);
    }

    /// @notice Whether an alert is active (raised, not cleared, not expired).
    /// @param id The alert.
    /// @return True while the alert is in force.
    function isAlertActive(uint64 id) external view returns (bool) {
        Alert memory a = _alerts[id];
        return a.active && a.expiresAt > block.timestamp;
    }

    /// @notice How many meters were ever registered.
    /// @return The count.
    function meterCount() external view returns (uint256) {
        return _meters.length;
    }

    /// @notice The meter registered in position `index` (0-based, in registration order).
    /// @param index The position.
    /// @return The meter's address.
    function meterAt(uint256 index) external view returns (address) {
        return _meters[index];
    }

    /// @notice The EIP-712 domain separator meters sign readings under.
    /// @return The separator for this chain and this deployment.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }
}
