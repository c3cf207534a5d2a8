// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IMeterBilling} from "./IMeterBilling.sol";

/// @title SmartMeterBilling
/// @notice The source of truth for meters, time-of-use tariffs, import and export readings, live bills
/// and grid alerts.
/// @dev Units: energy in watt-hours (Wh); prices in millipence (1/1000 p) per kWh, standing charges in
/// millipence per day; accrued amounts in micropence (1/1,000,000 p). Times are unix seconds and days
/// are counted in UTC: a settlement period is the UTC half hour [1800 p, 1800 (p + 1)).
///
/// Pricing: the energy between two readings is split over the settlement periods it spans in
/// proportion to time (`_accrue`: cumulative floors, so the parts add up to the register delta exactly)
/// and each part is priced at its period's price (Wh x millipence/kWh = micropence, exact). A period's
/// price comes from the tariff version in force at its start: flat, a daily band table, or day-ahead
/// prices published per period with a fallback. A reading spanning more than `LOOP_PERIODS` periods is
/// priced in closed form to the same micropence (`_accrueLong`, docs/long-gaps.md), so its cost does not
/// grow with the length of a meter's silence. Versions start at period boundaries at least
/// `maxFutureSkew` ahead of the block, and day-ahead prices are published as far ahead, so no price of
/// a period any recorded reading covers ever changes: a new tariff never reprices consumption.
///
/// Clock time: band tables are written in local half hours, either GMT all year (`clock` 0, Economy 7)
/// or UK clock time (`clock` 1). The contract cannot know the UK's clock changes (they are law, not
/// arithmetic), so the operator publishes them from the IANA time zone database: the constructor takes
/// the transitions, `addClockChanges` appends later ones. The local half hour of period p is
/// (p + offset) mod 48, with the offset in half hours at the period's start: on the 46-period spring
/// day local 01:00-02:00 never occurs, on the 50-period autumn day it occurs twice and both UTC periods
/// take its band. See docs/tariffs.md for the layouts and the gas budget.
///
/// Meters sign each reading as EIP-712 typed data; the gateway relays packed batches and pays the gas
/// but cannot forge or alter a reading.
contract SmartMeterBilling is AccessControl, EIP712, IMeterBilling {
    /// @notice Registers, deactivates, reactivates, exchanges and resets meters, sets tariffs and prices, closes
    /// periods.
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    /// @notice Submits batches of meter-signed readings.
    bytes32 public constant GATEWAY_ROLE = keccak256("GATEWAY_ROLE");
    /// @notice Raises and clears grid alerts.
    bytes32 public constant GRID_OPERATOR_ROLE = keccak256("GRID_OPERATOR_ROLE");

    /// @notice EIP-712 type hash of a reading: `energyWh` is the import register, `exportWh` the export one.
    bytes32 public constant READING_TYPEHASH =
        keccak256("Reading(address meter,uint64 seq,uint64 timestamp,uint64 energyWh,uint64 exportWh)");

    /// @notice Largest batch `submitReadings` accepts, to stay far below the block gas limit.
    uint256 public constant MAX_BATCH = 250;
    /// @notice Bytes per reading in `submitReadings`' packed batch.
    uint256 public constant RECORD_BYTES = 104;
    /// @notice Seconds in a settlement period.
    uint256 public constant PERIOD_SECONDS = 1800;
    /// @notice Most day-ahead prices one call publishes (two local days).
    uint256 public constant MAX_PRICES = 100;
    /// @notice A reading spanning more settlement periods than this beyond its first is priced in closed form
    /// (whole stretches of unchanged prices at once); shorter ones half hour by half hour.
    uint256 public constant LOOP_PERIODS = 24;

    /// @notice Price kinds: the version's rate for every period.
    uint8 public constant FLAT = 0;
    /// @notice Price kinds: the band of the period's local half hour.
    uint8 public constant BANDED = 1;
    /// @notice Price kinds: the published day-ahead price, the rate where none was published.
    uint8 public constant DAY_AHEAD = 2;
    /// @notice Band clocks: band tables in GMT all year.
    uint8 public constant CLOCK_GMT = 0;
    /// @notice Band clocks: band tables in UK clock time (the published clock changes).
    uint8 public constant CLOCK_LOCAL = 1;

    uint256 private constant SECONDS_PER_DAY = 86_400;
    uint256 private constant MICRO_PER_MILLI = 1_000;
    uint256 private constant PERIODS_PER_DAY = 48;
    uint256 private constant MAX_COST = type(uint48).max;
    uint256 private constant MAX_CREDIT = 2 ** 47 - 1;
    uint256 private constant BAND_BITS = 144;
    uint256 private constant CLOCK_BUCKET_SHIFT = 25;
    uint256 private constant CLOCK_SLOTS = 6;
    uint256 private constant PRICE_CACHE = 64;
    uint256 private constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// @notice Why a reading was not recorded (carried by `ReadingRejected`).
    /// @dev `OutOfRange` is kept for its number: the packed batch cannot encode a seq or timestamp above
    /// 32 bits or a register above 48 bits, so such a reading never reaches the contract. A meter's
    /// readings are recorded in an unbroken sequence: `SequenceGap` refuses one whose predecessor is
    /// missing (it may come again after it), so the gateway cannot withhold a signed reading and bill the
    /// energy with the next one. A reading refused for its content (`StaleTimestamp`, `FutureTimestamp`,
    /// `RegisterDecreased`, `ImplausibleDelta`, `PeriodOverflow`) and correctly signed uses up its seq:
    /// the refusal is recorded, the registers stay, and its energy is billed with the next reading.
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
        PeriodOverflow,
        SequenceGap
    }

    /// @notice A tariff version: when it starts, the standing charge and how import and export are priced.
    /// @dev Bands: 48 x 3 bits, local half hour h (0 = 00:00-00:30) at bits 3h holding its band 0..7.
    /// Band rates: 8 x 32 bits, band b at bits 32b, millipence per kWh.
    struct Tariff {
        uint32 effectiveFrom;
        uint32 standingCharge;
        uint8 clock;
        uint8 importKind;
        uint32 importRate;
        uint8 exportKind;
        uint32 exportRate;
        uint256 importBands;
        uint256 importBandRates;
        uint256 exportBands;
        uint256 exportBandRates;
    }

    /// @notice A change of the UK's clock: from `at` the local time is UTC + `offsetMinutes`.
    struct ClockChange {
        uint32 at;
        int16 offsetMinutes;
    }

    /// @dev What a meter keeps that readings do not touch.
    struct MeterInfo {
        bytes32 accountRef;
        bytes32 region;
        uint32 periodStart;
        uint32 periodId;
        bool registered;
        uint48 periodStartImportWh;
        uint48 periodStartExportWh;
        bool retired;
    }

    /// @dev A grid alert's bookkeeping; its text lives in the `GridAlert` event.
    struct Alert {
        uint64 expiresAt;
        bool active;
    }

    /// @notice Greatest plausible supply power in watts (import or export implying more is rejected).
    uint64 public immutable maxPowerW;
    /// @notice Seconds a reading's timestamp may lie ahead of the block's.
    uint64 public immutable maxFutureSkew;

    /// @dev The per-reading state of a meter, one word, low to high bits: active (1), last seq (32), last
    /// timestamp (32), import register (48), export register (48), the open period's import cost (48) and
    /// export credit (47). A reading costs one storage read and one write.
    mapping(address meter => uint256 packedState) private _state;
    mapping(address meter => MeterInfo) private _info;
    address[] private _meters;
    Tariff[] private _versions;
    /// @dev Day-ahead prices: key (p >> 3) << 1 | side (0 import, 1 export), 8 x 32 bits of price + 1.
    mapping(uint256 key => uint256 prices) private _dayAhead;
    /// @dev Periods where day-ahead prices may be published (either side), as sorted disjoint spans
    /// `from | to << 32` ([from, to), periods): a gap's stretches outside them are priced in closed form.
    uint256[] private _published;
    /// @dev Clock changes by bucket (t >> 25): bits 0-7 offset at the bucket's start + 128 (in half
    /// hours; 0 = not published), then per change 32 bits of time and 8 bits of the offset after + 128.
    mapping(uint256 bucket => uint256 changes) private _clock;
    uint32 private _clockLastAt;
    uint32 private _clockLastBucket;
    int16 private _clockLastOffset;
    mapping(uint64 id => Alert) private _alerts;
    uint64 private _nextAlertId;

    /// @notice Emitted when a meter is registered (its export register opens at 0).
    event MeterRegistered(
        address indexed meter, bytes32 accountRef, bytes32 region, uint64 openingWh, uint64 openedAt
    );
    /// @notice Emitted when a meter is deactivated: its readings are rejected until reactivated.
    event MeterDeactivated(address indexed meter);
    /// @notice Emitted when a deactivated meter is reactivated.
    event MeterReactivated(address indexed meter);
    /// @notice Emitted when the operator exchanges a meter: `newMeter` takes over `meter`'s account reference,
    /// region and open billing period, and `meter` is retired for good. `finalRecord` is the old meter's final
    /// read in `ReadingRecorded`'s layout (its last seq, the final read's time and registers, and the open
    /// period's import cost and export credit with the final read's energy priced in); the new meter's
    /// registers open at `openingImportWh` and `openingExportWh` at that time, its sequence at 0.
    event MeterExchanged(
        address indexed meter, address indexed newMeter, uint256 finalRecord, uint64 openingImportWh,
        uint64 openingExportWh
    );
    /// @notice Emitted when the operator resets a meter's register: `finalRecord` (in `ReadingRecorded`'s
    /// layout) is its final read under the old register and sequence; from then on its registers stand at
    /// `importWh` and `exportWh` and its sequence at 0. The open billing period and its figures go on.
    event RegisterReset(address indexed meter, uint256 finalRecord, uint64 importWh, uint64 exportWh);
    /// @notice Emitted when a tariff version is added; it prices the periods from `effectiveFrom` on.
    event TariffChanged(
        uint32 indexed version,
        uint64 effectiveFrom,
        uint32 standingCharge,
        uint8 clock,
        uint8 importKind,
        uint32 importRate,
        uint256 importBands,
        uint256 importBandRates,
        uint8 exportKind,
        uint32 exportRate,
        uint256 exportBands,
        uint256 exportBandRates
    );
    /// @notice Emitted when the newest tariff version is withdrawn before it took effect; the next version
    /// added takes its number.
    event TariffWithdrawn(uint32 indexed version, uint64 effectiveFrom);
    /// @notice Emitted when day-ahead prices are published for the periods from `from` on (an empty
    /// list leaves that side as it was).
    event DayAheadPricesPublished(uint64 indexed from, uint32[] importPrices, uint32[] exportPrices);
    /// @notice Emitted when a UK clock change is published.
    event ClockChangeAdded(uint64 at, int16 offsetMinutes);
    /// @notice Emitted when the last published UK clock change is withdrawn before it took effect.
    event ClockChangeWithdrawn(uint64 at, int16 offsetMinutes);
    /// @notice Emitted when a reading is recorded. `record` holds, low to high bits: seq (32), timestamp
    /// (32), import register (48), export register (48), the open period's import cost (48) and export
    /// credit (47), in Wh and micropence (the state word without its active bit).
    event ReadingRecorded(address indexed meter, uint256 record);
    /// @notice Emitted when a reading in a batch is rejected; the rest of the batch goes on. A rejection for
    /// the reading's content uses up its seq (see `RejectReason`): the meter's last seq moves to it.
    event ReadingRejected(address indexed meter, uint64 seq, RejectReason reason);
    /// @notice Emitted when the operator closes a billing period and issues its bill (amount due may be
    /// negative: the customer is in credit).
    event BillIssued(
        address indexed meter,
        uint32 periodId,
        uint64 periodStart,
        uint64 periodEnd,
        uint64 importWh,
        uint64 exportWh,
        uint64 importCost,
        uint64 exportCredit,
        uint64 standingCharge,
        int256 amountDue
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
    /// @notice Thrown when an operation names a meter retired by an exchange (it can never submit again).
    error MeterRetired(address meter);
    /// @notice Thrown when the final read of an exchange or register reset breaks a rule a reading would break
    /// (the reason, as `ReadingRejected` gives it; `StaleTimestamp` also for energy at the last reading's time).
    error FinalReadRejected(address meter, RejectReason reason);
    /// @notice Thrown when a meter's opening date lies in the future.
    error OpeningInFuture(uint64 openedAt, uint64 blockTimestamp);
    /// @notice Thrown when a value does not fit the packed field that stores it.
    error ValueTooLarge(uint256 value, uint256 max);
    /// @notice Thrown when a flat or day-ahead import rate is zero.
    error InvalidTariff(uint32 unitRate, uint32 standingCharge);
    /// @notice Thrown when a price kind is not FLAT, BANDED or DAY_AHEAD.
    error InvalidPriceKind(uint8 kind);
    /// @notice Thrown when a band clock is not CLOCK_GMT or CLOCK_LOCAL.
    error InvalidClock(uint8 clock);
    /// @notice Thrown when a band table sets bits beyond its 48 entries.
    error InvalidBandTable(uint256 bands);
    /// @notice Thrown when a time that must start a settlement period does not.
    error NotPeriodBoundary(uint64 time);
    /// @notice Thrown when a tariff or price would start before `earliest` (it could reprice a reading).
    error TooSoon(uint64 time, uint64 earliest);
    /// @notice Thrown when a tariff version would not start after the last one.
    error NotAfterLastVersion(uint64 effectiveFrom, uint64 lastEffectiveFrom);
    /// @notice Thrown when withdrawing a tariff version that is not the newest, or the opening one.
    error NotNewestVersion(uint32 version, uint32 newest);
    /// @notice Thrown when withdrawing a clock change that is not the last one published.
    error NotLastClockChange(uint64 at, uint64 lastAt);
    /// @notice Thrown when a day-ahead publication has no prices, too many, or import and export differ.
    error BadPriceCount(uint256 importCount, uint256 exportCount);
    /// @notice Thrown when a clock change is not after the last one published.
    error ClockChangeOutOfOrder(uint64 at, uint64 lastAt);
    /// @notice Thrown when a clock offset is not a whole number of half hours within a day.
    error InvalidClockOffset(int16 offsetMinutes);
    /// @notice Thrown when more clock changes fall into one 388-day bucket than it holds.
    error TooManyClockChanges(uint64 at);
    /// @notice Thrown when parallel array arguments differ in length.
    error LengthMismatch(uint256 readings, uint256 signatures);
    /// @notice Thrown when a batch (of readings or registrations) is empty or larger than `MAX_BATCH`.
    error BadBatchSize(uint256 size, uint256 max);
    /// @notice Thrown when a packed batch is not a whole number of `RECORD_BYTES` records.
    error BadBatchLength(uint256 length);
    /// @notice Thrown when closing a period in which no reading was recorded.
    error EmptyBillingPeriod(address meter, uint32 periodId);
    /// @notice Thrown when an alert's expiry is not in the future.
    error InvalidExpiry(uint64 expiresAt, uint64 blockTimestamp);
    /// @notice Thrown when an alert's severity is outside 0 (info) .. 2 (critical).
    error InvalidSeverity(uint8 severity);
    /// @notice Thrown when clearing an alert that does not exist or is already cleared.
    error AlertNotActive(uint64 id);

    /// @param admin Holds DEFAULT_ADMIN_ROLE and can grant the other roles.
    /// @param unitRate Opening flat import rate in millipence per kWh (version 1, in force from time 0).
    /// @param standingCharge Opening standing charge in millipence per day.
    /// @param exportRate Opening flat export rate in millipence per kWh (0: export is not paid).
    /// @param maxPowerW_ Greatest plausible supply power in watts.
    /// @param maxFutureSkew_ Seconds a reading may be ahead of the block timestamp.
    /// @param clockChanges The UK's clock changes, in time order (from the IANA time zone database).
    constructor(
        address admin,
        uint32 unitRate,
        uint32 standingCharge,
        uint32 exportRate,
        uint64 maxPowerW_,
        uint64 maxFutureSkew_,
        ClockChange[] memory clockChanges
    ) EIP712("SmartMeterBilling", "1") {
        if (admin == address(0)) revert ZeroAddress();
        maxPowerW = maxPowerW_;
        maxFutureSkew = maxFutureSkew_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        Tariff memory opening;
        opening.standingCharge = standingCharge;
        opening.importRate = unitRate;
        opening.exportRate = exportRate;
        _addVersion(opening);
        for (uint256 i = 0; i < clockChanges.length; ++i) {
            _addClockChange(clockChanges[i].at, clockChanges[i].offsetMinutes);
        }
    }

    // ------------------------------------------------------------------ meters

    /// @notice Registers a meter with its opening import register (its export register opens at 0).
    /// @dev The opening date lets a meter installed in the past receive its history.
    /// @param meter The meter's signing address.
    /// @param accountRef An opaque account reference (never personal data).
    /// @param region The grid region the meter is in (short text, right-padded).
    /// @param openingWh The import register at opening, in Wh.
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
    /// @param openingWh One opening import register per meter, in Wh.
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
        info.periodStartImportWh = uint48(openingWh);
        _state[meter] = 1 | (uint256(openedAt) << 33) | (uint256(openingWh) << 65);
        _meters.push(meter);
        emit MeterRegistered(meter, accountRef, region, openingWh, openedAt);
    }

    /// @notice Deactivates a meter: its readings are rejected until it is reactivated.
    /// @param meter The meter to deactivate.
    function deactivateMeter(address meter) external onlyRole(OPERATOR_ROLE) {
        if (!_info[meter].registered) revert UnknownMeter(meter);
        uint256 word = _state[meter];
        if (word & 1 == 0) revert MeterNotActive(meter);
        _state[meter] = word & ~uint256(1);
        emit MeterDeactivated(meter);
    }

    /// @notice Reactivates a deactivated meter.
    /// @param meter The meter to reactivate.
    function reactivateMeter(address meter) external onlyRole(OPERATOR_ROLE) {
        if (!_info[meter].registered) revert UnknownMeter(meter);
        if (_info[meter].retired) revert MeterRetired(meter);
        uint256 word = _state[meter];
        if (word & 1 == 1) revert MeterAlreadyActive(meter);
        _state[meter] = word | 1;
        emit MeterReactivated(meter);
    }

    /// @notice Exchanges a meter: a new meter takes over the old one's account, and the old one is retired.
    /// @dev The old meter's final read (taken at removal) closes its register: it is checked as a reading would
    /// be (not before the last reading, not after the block, registers not falling, plausible power; `finalReadAt`
    /// equal to the last reading's time means the last reading was the final read and the registers must equal
    /// it) and its energy is priced into the open period as a reading's would be. The new meter then holds the
    /// account reference, region and open billing period (its number, start, energy, import cost and export
    /// credit); its registers open at the given values at `finalReadAt`, its sequence at 0, active. The old
    /// address is retired: inactive, with an empty open period, and it can never be reactivated or registered
    /// again. Works on a deactivated meter (a lost or stolen key).
    /// @param meter The meter taken out.
    /// @param newMeter The new meter's signing address (never registered before).
    /// @param finalImportWh The old meter's import register at removal, in Wh.
    /// @param finalExportWh The old meter's export register at removal, in Wh.
    /// @param finalReadAt When the final read was taken (unix seconds).
    /// @param openingImportWh The new meter's import register at installation, in Wh.
    /// @param openingExportWh The new meter's export register at installation, in Wh.
    function exchangeMeter(
        address meter,
        address newMeter,
        uint64 finalImportWh,
        uint64 finalExportWh,
        uint64 finalReadAt,
        uint64 openingImportWh,
        uint64 openingExportWh
    ) external onlyRole(OPERATOR_ROLE) {
        if (newMeter == address(0)) revert ZeroAddress();
        if (_info[newMeter].registered) revert MeterAlreadyRegistered(newMeter);
        uint256 word = _finalRead(meter, finalImportWh, finalExportWh, finalReadAt);
        MeterInfo storage old = _info[meter];
        MeterInfo storage info = _info[newMeter];
        info.registered = true;
        info.accountRef = old.accountRef;
        info.region = old.region;
        info.periodStart = old.periodStart;
        info.periodId = old.periodId;
        (info.periodStartImportWh, info.periodStartExportWh) =
            _carried(old, finalImportWh, finalExportWh, openingImportWh, openingExportWh);
        _state[newMeter] = 1 | (uint256(finalReadAt) << 33) | (uint256(openingImportWh) << 65)
            | (uint256(openingExportWh) << 113) | ((word >> 161) << 161);
        _meters.push(newMeter);
        // The old meter keeps its final read, with nothing left to bill, and is shut for good.
        old.retired = true;
        old.periodStart = uint32(finalReadAt);
        old.periodStartImportWh = uint48(finalImportWh);
        old.periodStartExportWh = uint48(finalExportWh);
        _state[meter] = word & ((uint256(1) << 161) - 2);
        emit MeterExchanged(meter, newMeter, word >> 1, openingImportWh, openingExportWh);
    }

    /// @notice Resets a meter's register and sequence (a register rollover, a firmware fault that used up the
    /// sequence, a re-keyed meter keeping its address): its final read closes the old register, then its
    /// registers restart at the given values and its sequence at 0.
    /// @dev The final read is checked and priced as in `exchangeMeter`. What resets: the last seq (to 0: the
    /// next reading may carry any seq from 1) and the import and export registers (to `importWh`, `exportWh`).
    /// What stays: the last reading's time (`finalReadAt`; every later reading must be after it, so no reading
    /// signed under the old sequence before it can be recorded again), the active flag, the account and the open
    /// billing period (its number, start, energy, import cost and export credit).
    /// @param meter The meter.
    /// @param finalImportWh Its import register just before the reset, in Wh.
    /// @param finalExportWh Its export register just before the reset, in Wh.
    /// @param finalReadAt When that final read was taken (unix seconds).
    /// @param importWh The import register from then on, in Wh.
    /// @param exportWh The export register from then on, in Wh.
    function resetRegister(
        address meter,
        uint64 finalImportWh,
        uint64 finalExportWh,
        uint64 finalReadAt,
        uint64 importWh,
        uint64 exportWh
    ) external onlyRole(OPERATOR_ROLE) {
        uint256 word = _finalRead(meter, finalImportWh, finalExportWh, finalReadAt);
        MeterInfo storage info = _info[meter];
        (info.periodStartImportWh, info.periodStartExportWh) =
            _carried(info, finalImportWh, finalExportWh, importWh, exportWh);
        _state[meter] = (word & 1) | (uint256(finalReadAt) << 33) | (uint256(importWh) << 65)
            | (uint256(exportWh) << 113) | ((word >> 161) << 161);
        emit RegisterReset(meter, word >> 1, importWh, exportWh);
    }

    /// @dev Checks a meter's final read (see `exchangeMeter`) and returns its state word with the read applied.
    function _finalRead(address meter, uint64 importWh, uint64 exportWh, uint64 readAt)
        private
        view
        returns (uint256 word)
    {
        MeterInfo storage info = _info[meter];
        if (!info.registered) revert UnknownMeter(meter);
        if (info.retired) revert MeterRetired(meter);
        word = _state[meter];
        uint256 lastTimestamp = uint32(word >> 33);
        uint256 lastImport = uint48(word >> 65);
        uint256 lastExport = uint48(word >> 113);
        if (readAt == lastTimestamp) {
            if (importWh != lastImport || exportWh != lastExport) {
                revert FinalReadRejected(meter, RejectReason.StaleTimestamp);
            }
            return word;
        }
        if (importWh > type(uint48).max || exportWh > type(uint48).max) {
            revert FinalReadRejected(meter, RejectReason.OutOfRange);
        }
        RejectReason reason =
            _check(word | 1, uint256(uint32(word >> 1)) + 1, readAt, importWh, exportWh, block.timestamp, maxPowerW);
        if (reason != RejectReason.None) revert FinalReadRejected(meter, reason);
        uint256[PRICE_CACHE] memory cache;
        (uint256 cost, uint256 credit) = _accrue(lastTimestamp, readAt, importWh - lastImport, exportWh - lastExport, cache);
        cost += uint48(word >> 161);
        credit += word >> 209;
        if (cost > MAX_COST || credit > MAX_CREDIT) revert FinalReadRejected(meter, RejectReason.PeriodOverflow);
        word = (word & ((uint256(1) << 33) - 1)) | (uint256(readAt) << 33) | (uint256(importWh) << 65)
            | (uint256(exportWh) << 113) | (cost << 161) | (credit << 209);
    }

    /// @dev The open period's start registers for registers that restart at `importWh` and `exportWh` after a
    /// final read of `finalImport` and `finalExport`: shifted (modulo 2^48, as the period's energy is read) so
    /// that the period keeps the energy it had.
    function _carried(
        MeterInfo storage info,
        uint64 finalImport,
        uint64 finalExport,
        uint64 importWh,
        uint64 exportWh
    ) private view returns (uint48 startImport, uint48 startExport) {
        if (importWh > type(uint48).max) revert ValueTooLarge(importWh, type(uint48).max);
        if (exportWh > type(uint48).max) revert ValueTooLarge(exportWh, type(uint48).max);
        unchecked {
            startImport = uint48(uint256(info.periodStartImportWh) + importWh - finalImport);
            startExport = uint48(uint256(info.periodStartExportWh) + exportWh - finalExport);
        }
    }

    // ------------------------------------------------------------------ tariffs and prices

    /// @notice Adds a tariff version, in force from its `effectiveFrom` until the next version.
    /// @dev `effectiveFrom` must be a period boundary at least `maxFutureSkew` from now and after the last
    /// version's start; 0 means the first such boundary. A version not yet in effect can be withdrawn
    /// (`withdrawTariff`, newest first) to schedule a nearer one.
    /// @param t The version (its `effectiveFrom` as above).
    /// @return version The new version's number (1 is the constructor's).
    function setTariff(Tariff calldata t) external onlyRole(OPERATOR_ROLE) returns (uint32 version) {
        uint256 earliest = block.timestamp + maxFutureSkew;
        uint256 from = t.effectiveFrom;
        if (from == 0) from = ((earliest + PERIOD_SECONDS - 1) / PERIOD_SECONDS) * PERIOD_SECONDS;
        if (from % PERIOD_SECONDS != 0) revert NotPeriodBoundary(uint64(from));
        if (from < earliest) revert TooSoon(uint64(from), uint64(earliest));
        uint256 last = _versions[_versions.length - 1].effectiveFrom;
        if (from <= last) revert NotAfterLastVersion(uint64(from), uint64(last));
        if (from > type(uint32).max) revert ValueTooLarge(from, type(uint32).max);
        Tariff memory v = t;
        v.effectiveFrom = uint32(from);
        return _addVersion(v);
    }

    /// @notice Withdraws the newest tariff version while it starts at least `maxFutureSkew` from now, so that
    /// no reading has been priced by it; its number goes to the next version added.
    /// @param version The newest version's number (named so that a stale request cannot withdraw another).
    function withdrawTariff(uint32 version) external onlyRole(OPERATOR_ROLE) {
        uint256 n = _versions.length;
        if (version != n || n == 1) revert NotNewestVersion(version, uint32(n));
        uint256 from = _versions[n - 1].effectiveFrom;
        uint256 earliest = block.timestamp + maxFutureSkew;
        if (from < earliest) revert TooSoon(uint64(from), uint64(earliest));
        _versions.pop();
        emit TariffWithdrawn(version, uint64(from));
    }

    function _addVersion(Tariff memory v) private returns (uint32 version) {
        if (v.clock > CLOCK_LOCAL) revert InvalidClock(v.clock);
        if (v.importKind > DAY_AHEAD) revert InvalidPriceKind(v.importKind);
        if (v.exportKind > DAY_AHEAD) revert InvalidPriceKind(v.exportKind);
        if (v.importKind != BANDED && v.importRate == 0) revert InvalidTariff(v.importRate, v.standingCharge);
        if (v.importBands >> BAND_BITS != 0) revert InvalidBandTable(v.importBands);
        if (v.exportBands >> BAND_BITS != 0) revert InvalidBandTable(v.exportBands);
        _versions.push(v);
        version = uint32(_versions.length);
        emit TariffChanged(
            version,
            v.effectiveFrom,
            v.standingCharge,
            v.clock,
            v.importKind,
            v.importRate,
            v.importBands,
            v.importBandRates,
            v.exportKind,
            v.exportRate,
            v.exportBands,
            v.exportBandRates
        );
    }

    /// @notice Publishes day-ahead prices for consecutive settlement periods (a local day is 46, 48 or
    /// 50 of them from local midnight). Periods published again are overwritten.
    /// @param from The first period's start: a period boundary at least `maxFutureSkew` from now.
    /// @param importPrices Millipence per kWh for each period, or empty to leave import as it was.
    /// @param exportPrices Millipence per kWh for each period, or empty to leave export as it was.
    function publishDayAheadPrices(uint64 from, uint32[] calldata importPrices, uint32[] calldata exportPrices)
        external
        onlyRole(OPERATOR_ROLE)
    {
        uint256 earliest = block.timestamp + maxFutureSkew;
        if (from % PERIOD_SECONDS != 0) revert NotPeriodBoundary(from);
        if (from < earliest) revert TooSoon(from, uint64(earliest));
        uint256 ni = importPrices.length;
        uint256 ne = exportPrices.length;
        if (ni + ne == 0 || ni > MAX_PRICES || ne > MAX_PRICES || (ni != 0 && ne != 0 && ni != ne)) {
            revert BadPriceCount(ni, ne);
        }
        uint256 first = from / PERIOD_SECONDS;
        _publish(first, importPrices, 0);
        _publish(first, exportPrices, 1);
        _markPublished(first, first + (ni > ne ? ni : ne));
        emit DayAheadPricesPublished(from, importPrices, exportPrices);
    }

    function _publish(uint256 first, uint32[] calldata prices, uint256 side) private {
        uint256 n = prices.length;
        uint256 i = 0;
        while (i < n) {
            uint256 p = first + i;
            uint256 key = ((p >> 3) << 1) | side;
            uint256 word = _dayAhead[key];
            do {
                uint256 price = prices[i];
                if (price == type(uint32).max) revert ValueTooLarge(price, type(uint32).max - 1);
                uint256 shift = 32 * (p & 7);
                word = (word & ~(uint256(type(uint32).max) << shift)) | ((price + 1) << shift);
                ++i;
                p = first + i;
            } while (i < n && p & 7 != 0);
            _dayAhead[key] = word;
        }
    }

    /// @dev Adds [from, to) to `_published`, merging it with every span it touches or precedes (a span may
    /// then cover periods without a price: they are priced period by period, at the fallback, all the same).
    function _markPublished(uint256 from, uint256 to) private {
        uint256 n = _published.length;
        while (n != 0) {
            uint256 span = _published[n - 1];
            if (span >> 32 < from) break;
            if (uint32(span) < from) from = uint32(span);
            if (span >> 32 > to) to = span >> 32;
            _published.pop();
            --n;
        }
        _published.push(from | (to << 32));
    }

    /// @notice Publishes UK clock changes after the last one published, each at least `maxFutureSkew` ahead.
    /// @param changes The changes in time order (offsets in minutes, whole half hours).
    function addClockChanges(ClockChange[] calldata changes) external onlyRole(OPERATOR_ROLE) {
        uint256 earliest = block.timestamp + maxFutureSkew;
        for (uint256 i = 0; i < changes.length; ++i) {
            if (changes[i].at < earliest) revert TooSoon(changes[i].at, uint64(earliest));
            _addClockChange(changes[i].at, changes[i].offsetMinutes);
        }
    }

    function _addClockChange(uint32 at, int16 offsetMinutes) private {
        if (offsetMinutes % 30 != 0 || offsetMinutes < -1440 || offsetMinutes > 1440) {
            revert InvalidClockOffset(offsetMinutes);
        }
        uint32 lastAt = _clockLastAt;
        if (at <= lastAt) revert ClockChangeOutOfOrder(at, lastAt);
        int16 lastOffset = _clockLastOffset;
        uint256 bucket = uint256(at) >> CLOCK_BUCKET_SHIFT;
        uint256 word;
        if (lastAt == 0 || bucket > _clockLastBucket) {
            // Buckets between the last change and this one hold the last offset and no change.
            uint256 carried = uint256(int256(lastOffset) + 128);
            if (lastAt != 0) {
                for (uint256 b = uint256(_clockLastBucket) + 1; b < bucket; ++b) {
                    _clock[b] = carried;
                }
            }
            word = carried;
        } else {
            word = _clock[bucket];
        }
        uint256 k = 0;
        while (k < CLOCK_SLOTS && uint32(word >> (8 + 40 * k)) != 0) ++k;
        if (k == CLOCK_SLOTS) revert TooManyClockChanges(at);
        int16 halfHours = offsetMinutes / 30;
        word |= (uint256(at) << (8 + 40 * k)) | (uint256(int256(halfHours) + 128) << (40 + 40 * k));
        _clock[bucket] = word;
        _clockLastAt = at;
        _clockLastBucket = uint32(bucket);
        _clockLastOffset = halfHours;
        emit ClockChangeAdded(at, offsetMinutes);
    }

    /// @notice Withdraws the last published clock change while it lies at least `maxFutureSkew` ahead, so
    /// that no reading has been priced by it (to publish a corrected one: withdraw, then add).
    /// @param at The last change's time (named so that a stale request cannot withdraw another).
    function withdrawClockChange(uint64 at) external onlyRole(OPERATOR_ROLE) {
        uint256 lastAt = _clockLastAt;
        if (at != lastAt || lastAt == 0) revert NotLastClockChange(at, uint64(lastAt));
        uint256 earliest = block.timestamp + maxFutureSkew;
        if (at < earliest) revert TooSoon(at, uint64(earliest));
        int16 offsetMinutes = _clockLastOffset * 30;
        uint256 bucket = _clockLastBucket;
        uint256 word = _clock[bucket];
        uint256 k = 1;
        while (k < CLOCK_SLOTS && uint32(word >> (8 + 40 * k)) != 0) ++k;
        --k; // the slot of the change withdrawn: the last one used
        if (k > 0) {
            word &= ~(uint256(type(uint40).max) << (8 + 40 * k));
            _clock[bucket] = word;
            _setLastClockChange(word, k - 1, bucket);
        } else {
            // The change opened its bucket, filling the empty ones since the previous change's: undo both.
            delete _clock[bucket];
            uint256 previous = 0;
            while (bucket > 0) {
                --bucket;
                previous = _clock[bucket];
                if (previous == 0 || uint32(previous >> 8) != 0) break;
                delete _clock[bucket];
            }
            if (previous == 0) {
                _clockLastAt = 0;
                _clockLastBucket = 0;
                _clockLastOffset = 0;
            } else {
                k = 1;
                while (k < CLOCK_SLOTS && uint32(previous >> (8 + 40 * k)) != 0) ++k;
                _setLastClockChange(previous, k - 1, bucket);
            }
        }
        emit ClockChangeWithdrawn(at, offsetMinutes);
    }

    function _setLastClockChange(uint256 word, uint256 k, uint256 bucket) private {
        _clockLastAt = uint32(word >> (8 + 40 * k));
        _clockLastOffset = int16(int256((word >> (40 + 40 * k)) & 0xff) - 128);
        _clockLastBucket = uint32(bucket);
    }

    /// @dev The UK clock's offset from UTC at `t`, in half hours (0 before the first published change,
    /// the last published offset after the last).
    function _offsetAt(uint256 t) private view returns (int256 offset) {
        uint256 bucket = t >> CLOCK_BUCKET_SHIFT;
        uint256 word = _clock[bucket];
        if (word == 0) {
            return _clockLastAt != 0 && bucket > _clockLastBucket ? int256(_clockLastOffset) : int256(0);
        }
        offset = int256(word & 0xff) - 128;
        for (uint256 k = 0; k < CLOCK_SLOTS; ++k) {
            uint256 at = uint32(word >> (8 + 40 * k));
            if (at == 0 || at > t) break;
            offset = int256((word >> (40 + 40 * k)) & 0xff) - 128;
        }
    }

    /// @dev The index in `_versions` of the version in force at `t` (version 1 starts at 0): the newest or
    /// the one before (a version is scheduled) if it is, in one or two reads, else a binary search, so the
    /// cost grows with the log of the count.
    function _versionIndexAt(uint256 t) private view returns (uint256) {
        uint256 hi = _versions.length - 1;
        if (_versions[hi].effectiveFrom <= t) return hi;
        --hi;
        if (_versions[hi].effectiveFrom <= t) return hi;
        uint256 lo = 0;
        --hi;
        while (lo < hi) {
            uint256 mid = (lo + hi + 1) >> 1;
            if (_versions[mid].effectiveFrom <= t) lo = mid;
            else hi = mid - 1;
        }
        return lo;
    }

    /// @dev The import and export prices of settlement period `p`, in millipence per kWh.
    function _pricesOf(uint256 p) private view returns (uint256 importPrice, uint256 exportPrice) {
        uint256 t = p * PERIOD_SECONDS;
        Tariff storage v = _versions[_versionIndexAt(t)];
        uint8 importKind = v.importKind;
        uint8 exportKind = v.exportKind;
        uint256 h = p % PERIODS_PER_DAY;
        if (v.clock == CLOCK_LOCAL && (importKind == BANDED || exportKind == BANDED)) {
            h = uint256(int256(p + PERIODS_PER_DAY) + _offsetAt(t)) % PERIODS_PER_DAY;
        }
        if (importKind == FLAT) importPrice = v.importRate;
        else if (importKind == BANDED) importPrice = _band(v.importBands, v.importBandRates, h);
        else importPrice = _dayAheadPrice(p, 0, v.importRate);
        if (exportKind == FLAT) exportPrice = v.exportRate;
        else if (exportKind == BANDED) exportPrice = _band(v.exportBands, v.exportBandRates, h);
        else exportPrice = _dayAheadPrice(p, 1, v.exportRate);
    }

    function _band(uint256 bands, uint256 rates, uint256 h) private pure returns (uint256) {
        return uint32(rates >> (32 * ((bands >> (3 * h)) & 7)));
    }

    function _dayAheadPrice(uint256 p, uint256 side, uint256 fallbackRate) private view returns (uint256) {
        return _fromWord(_dayAhead[((p >> 3) << 1) | side], p, fallbackRate);
    }

    /// @dev Prices of period `p` through the batch's memory cache (64 entries, direct-mapped on p mod 64, so
    /// a batch of readings after a day's gap prices each half hour once;
    /// entry: (p + 1) << 64 | import price << 32 | export price).
    function _cachedPrices(uint256 p, uint256[PRICE_CACHE] memory cache) private view returns (uint256, uint256) {
        uint256 entry = cache[p % PRICE_CACHE];
        if (entry >> 64 == p + 1) return (uint32(entry >> 32), uint32(entry));
        (uint256 importPrice, uint256 exportPrice) = _pricesOf(p);
        cache[p % PRICE_CACHE] = ((p + 1) << 64) | (importPrice << 32) | exportPrice;
        return (importPrice, exportPrice);
    }

    /// @dev The standing charge for [start, end) in micropence: each version's daily charge for the
    /// seconds it was in force, summed, rounded down once.
    function _standing(uint256 start, uint256 end) private view returns (uint256) {
        if (end <= start) return 0;
        uint256 n = _versions.length;
        uint256 total = 0;
        for (uint256 i = _versionIndexAt(start); i < n; ++i) {
            uint256 from = _versions[i].effectiveFrom;
            if (from >= end) break;
            if (from < start) from = start;
            uint256 to = end;
            if (i + 1 < n && _versions[i + 1].effectiveFrom < end) to = _versions[i + 1].effectiveFrom;
            total += (to - from) * _versions[i].standingCharge;
        }
        return (total * MICRO_PER_MILLI) / SECONDS_PER_DAY;
    }

    // ------------------------------------------------------------------ readings

    /// @notice Records a batch of meter-signed readings; bad ones are rejected one by one.
    /// @dev `batch` is `RECORD_BYTES`-byte records without padding: meter (20 bytes), seq (4), timestamp
    /// (4), import register `energyWh` (6), export register `exportWh` (6), signature r (32) and
    /// yParity << 255 | s (32, EIP-2098). Each reading is checked against the state its predecessors in the
    /// batch left, so a batch may carry several readings of one meter in sequence order. A rejected
    /// reading emits `ReadingRejected` and changes nothing else.
    /// @param batch The packed readings (see `common/batches.py`).
    function submitReadings(bytes calldata batch) external onlyRole(GATEWAY_ROLE) {
        uint256 n = batch.length / RECORD_BYTES;
        if (n * RECORD_BYTES != batch.length) revert BadBatchLength(batch.length);
        if (n == 0 || n > MAX_BATCH) revert BadBatchSize(n, MAX_BATCH);
        bytes32 domain = _domainSeparatorV4();
        uint256 horizon = block.timestamp + maxFutureSkew;
        uint256 maxPower = maxPowerW;
        uint256[PRICE_CACHE] memory cache;
        uint256 at;
        assembly ("memory-safe") {
            at := batch.offset
        }
        for (uint256 end = at + n * RECORD_BYTES; at < end; at += RECORD_BYTES) {
            _record(at, domain, horizon, maxPower, cache);
        }
    }

    /// @dev The hot path: one storage read, one storage write, one ecrecover and one event per recorded
    /// reading. `at` is the record's calldata offset.
    function _record(uint256 at, bytes32 domain, uint256 horizon, uint256 maxPower, uint256[PRICE_CACHE] memory cache)
        private
    {
        address meter;
        uint256 fields;
        assembly ("memory-safe") {
            meter := shr(96, calldataload(at))
            // Bytes 8..39: the meter's last 12 bytes, then seq, timestamp, import and export registers.
            fields := calldataload(add(at, 8))
        }
        uint256 seq = uint32(fields >> 128);
        uint256 timestamp = uint32(fields >> 96);
        uint256 importWh = uint48(fields >> 48);
        uint256 exportWh = uint48(fields);
        uint256 word = _state[meter];
        RejectReason reason = _check(word, seq, timestamp, importWh, exportWh, horizon, maxPower);
        bool refused = reason != RejectReason.None;
        if (refused && (reason == RejectReason.MeterNotActive || reason == RejectReason.StaleSequence
            || reason == RejectReason.SequenceGap)) {
            emit ReadingRejected(meter, uint64(seq), reason); // changes nothing: not the meter's next reading
            return;
        }
        if (!_signedByMeter(meter, seq, timestamp, importWh, exportWh, at, domain)) {
            emit ReadingRejected(meter, uint64(seq), RejectReason.BadSignature);
            return;
        }
        if (refused) {
            _useUp(meter, word, seq, reason);
            return;
        }
        (uint256 cost, uint256 credit) = _accrue(
            uint32(word >> 33), timestamp, importWh - uint48(word >> 65), exportWh - uint48(word >> 113), cache
        );
        unchecked {
            // Each part is at most 2^48 Wh x 2^32 millipence/kWh, far below 2^256.
            cost += uint48(word >> 161);
            credit += word >> 209;
        }
        if (cost > MAX_COST || credit > MAX_CREDIT) {
            // The open period has outgrown its fields: the operator must close it; the energy goes with the next.
            _useUp(meter, word, seq, RejectReason.PeriodOverflow);
            return;
        }
        word = 1 | (seq << 1) | (timestamp << 33) | (importWh << 65) | (exportWh << 113) | (cost << 161)
            | (credit << 209);
        _state[meter] = word;
        emit ReadingRecorded(meter, word >> 1);
    }

    /// @dev A meter-signed reading refused for its content: its seq is used up (the refusal is recorded), the
    /// registers, time and open bill stay as they were.
    function _useUp(address meter, uint256 word, uint256 seq, RejectReason reason) private {
        _state[meter] = (word & ~(uint256(type(uint32).max) << 1)) | (seq << 1);
        emit ReadingRejected(meter, uint64(seq), reason);
    }

    /// @dev The contract's checks on a reading (all but the signature), on the packed state word.
    function _check(
        uint256 word,
        uint256 seq,
        uint256 timestamp,
        uint256 importWh,
        uint256 exportWh,
        uint256 horizon,
        uint256 maxPower
    ) private pure returns (RejectReason) {
        if (word & 1 == 0) return RejectReason.MeterNotActive;
        if (seq <= uint32(word >> 1)) return RejectReason.StaleSequence;
        if (seq != uint32(word >> 1) + 1) return RejectReason.SequenceGap;
        uint256 lastTimestamp = uint32(word >> 33);
        if (timestamp <= lastTimestamp) return RejectReason.StaleTimestamp;
        if (timestamp > horizon) return RejectReason.FutureTimestamp;
        uint256 lastImport = uint48(word >> 65);
        uint256 lastExport = uint48(word >> 113);
        if (importWh < lastImport || exportWh < lastExport) return RejectReason.RegisterDecreased;
        unchecked {
            // delta x 3600 <= maxPowerW x elapsed seconds, for import and export, kept in integers
            // (48-bit deltas and 32-bit times cannot overflow).
            uint256 limit = maxPower * (timestamp - lastTimestamp);
            if ((importWh - lastImport) * 3600 > limit || (exportWh - lastExport) * 3600 > limit) {
                return RejectReason.ImplausibleDelta;
            }
        }
        return RejectReason.None;
    }

    /// @dev The cost of `dImport` and credit of `dExport` Wh used over [t0, t1): split over the settlement
    /// periods in proportion to time by cumulative floors (the parts add up to the deltas exactly) and
    /// priced per period. `common.tariff.split` is the same rule in Python.
    function _accrue(uint256 t0, uint256 t1, uint256 dImport, uint256 dExport, uint256[PRICE_CACHE] memory cache)
        private
        view
        returns (uint256 cost, uint256 credit)
    {
        if (dImport | dExport == 0) return (0, 0);
        uint256 p = t0 / PERIOD_SECONDS;
        uint256 last = (t1 - 1) / PERIOD_SECONDS;
        uint256 importPrice;
        uint256 exportPrice;
        // Unchecked: deltas fit 48 bits, times 32 and prices 32, so no product or sum nears 2^256, and
        // the cumulative floors only grow (cum <= delta), so no difference underflows.
        unchecked {
            if (p == last) {
                (importPrice, exportPrice) = _cachedPrices(p, cache);
                return (dImport * importPrice, dExport * exportPrice);
            }
            if (last - p > LOOP_PERIODS) return _accrueLong(t0, t1, dImport, dExport, last);
            uint256 span = t1 - t0;
            uint256 doneImport = 0;
            uint256 doneExport = 0;
            for (; p < last; ++p) {
                uint256 upTo = (p + 1) * PERIOD_SECONDS - t0;
                uint256 cumImport = (dImport * upTo) / span;
                uint256 cumExport = (dExport * upTo) / span;
                if (cumImport != doneImport || cumExport != doneExport) {
                    (importPrice, exportPrice) = _cachedPrices(p, cache);
                    cost += (cumImport - doneImport) * importPrice;
                    credit += (cumExport - doneExport) * exportPrice;
                    doneImport = cumImport;
                    doneExport = cumExport;
                }
            }
            if (dImport != doneImport || dExport != doneExport) {
                (importPrice, exportPrice) = _cachedPrices(last, cache);
                cost += (dImport - doneImport) * importPrice;
                credit += (dExport - doneExport) * exportPrice;
            }
        }
    }

    /// @dev Running sums of `_accrueLong`: a gap's interval and deltas, and the import and export sums of
    /// C(q) x (price(q) - price(q + 1)) kept as the positive and the negative terms apart (micropence).
    struct Gap {
        uint256 t0;
        uint256 span;
        uint256 dImport;
        uint256 dExport;
        uint256 costUp;
        uint256 costDown;
        uint256 creditUp;
        uint256 creditDown;
    }

    /// @dev `_accrue` for a gap of more than `LOOP_PERIODS` periods, at a cost bounded by the number of
    /// tariff versions, clock changes and published day-ahead prices it spans, not by its length. With
    /// C(q) = floor(d x ((q + 1) x 1800 - t0) / (t1 - t0)) the cumulative floor at the end of period q,
    /// the parts are C(q) - C(q - 1) (C(first - 1) = 0, C(last) = d) and summation by parts gives
    /// sum of part(q) x price(q) = d x price(last) + sum over q in [first, last) of C(q) x (price(q) -
    /// price(q + 1)): the same micropence, counting only the periods after which the price changes.
    function _accrueLong(uint256 t0, uint256 t1, uint256 dImport, uint256 dExport, uint256 last)
        private
        view
        returns (uint256 cost, uint256 credit)
    {
        Gap memory gap = Gap(t0, t1 - t0, dImport, dExport, 0, 0, 0, 0);
        (uint256 importPrice, uint256 exportPrice) = _pricesOf(last);
        unchecked {
            gap.costUp = dImport * importPrice;
            gap.creditUp = dExport * exportPrice;
            for (uint256 q = t0 / PERIOD_SECONDS; q < last;) {
                q = _stretch(gap, q, last);
            }
            // The sums are the cost and credit of the split, so never negative.
            return (gap.costUp - gap.costDown, gap.creditUp - gap.creditDown);
        }
    }

    /// @dev Adds the terms of the periods q.. of one stretch (one tariff version, one clock offset and, for a
    /// day-ahead side, published prices throughout or nowhere) to `gap`; returns the next stretch's first
    /// period. Without published prices a stretch's prices repeat every 48 periods: each local half hour h
    /// whose price differs from the next one's adds (price_h - price_h+1) x a sum of floors of an
    /// arithmetic progression (`_floorSum`). Published stretches are summed period by period.
    function _stretch(Gap memory gap, uint256 q, uint256 last) private view returns (uint256 end) {
        uint256 index = _versionIndexAt(q * PERIOD_SECONDS);
        Tariff memory v = _versions[index];
        end = last + 1;
        if (index + 1 < _versions.length) {
            uint256 next = _versions[index + 1].effectiveFrom / PERIOD_SECONDS;
            if (next < end) end = next;
        }
        int256 offset = 0;
        if (v.clock == CLOCK_LOCAL && (v.importKind == BANDED || v.exportKind == BANDED)) {
            offset = _offsetAt(q * PERIOD_SECONDS);
            uint256 change = _nextClockPeriod(q * PERIOD_SECONDS, end);
            if (change < end) end = change;
        }
        bool published = false;
        if (v.importKind == DAY_AHEAD || v.exportKind == DAY_AHEAD) {
            uint256 until;
            (published, until) = _publishedSpanAt(q);
            if (until < end) end = until;
        }
        // Pairs (q', q' + 1) inside the stretch, then the pair that crosses into the next one.
        uint256 stop = end <= last ? end - 1 : last;
        if (published || stop - q < PERIODS_PER_DAY) _pairs(gap, v, offset, q, stop);
        else _halfHourSums(gap, v, offset, q, stop);
        if (end <= last) {
            uint256 h = uint256(int256(end - 1 + PERIODS_PER_DAY) + offset) % PERIODS_PER_DAY;
            (uint256 nextImport, uint256 nextExport) = _pricesOf(end);
            _addTerm(gap, end - 1, _priceIn(v, 0, end - 1, h), nextImport, _priceIn(v, 1, end - 1, h), nextExport);
        }
    }

    /// @dev The terms of the periods [q, stop) one by one (prices of q' and q' + 1 both from version `v`).
    function _pairs(Gap memory gap, Tariff memory v, int256 offset, uint256 q, uint256 stop) private view {
        if (q >= stop) return;
        uint256 h = uint256(int256(q + PERIODS_PER_DAY) + offset) % PERIODS_PER_DAY;
        uint256 importPrice = _priceIn(v, 0, q, h);
        uint256 exportPrice = _priceIn(v, 1, q, h);
        bool importAhead = v.importKind == DAY_AHEAD;
        bool exportAhead = v.exportKind == DAY_AHEAD;
        uint256 importWord;
        uint256 exportWord;
        // The sums on the stack, written back once: [cost up, cost down, credit up, credit down].
        uint256[4] memory sums = [gap.costUp, gap.costDown, gap.creditUp, gap.creditDown];
        uint256 span = gap.span;
        unchecked {
            // d x (seconds from t0 to the end of period p - 1), for import and export.
            uint256 importAt = gap.dImport * ((q + 1) * PERIOD_SECONDS - gap.t0);
            uint256 exportAt = gap.dExport * ((q + 1) * PERIOD_SECONDS - gap.t0);
            uint256 importStep = gap.dImport * PERIOD_SECONDS;
            uint256 exportStep = gap.dExport * PERIOD_SECONDS;
            for (uint256 p = q + 1; p <= stop; ++p) {
                h = h == PERIODS_PER_DAY - 1 ? 0 : h + 1;
                if (p == q + 1 || p & 7 == 0) {
                    // One storage word holds a side's day-ahead prices of eight periods: read it once.
                    if (importAhead) importWord = _dayAhead[(p >> 3) << 1];
                    if (exportAhead) exportWord = _dayAhead[((p >> 3) << 1) | 1];
                }
                uint256 next = importAhead ? _fromWord(importWord, p, v.importRate) : _periodicPrice(v, 0, h);
                if (next != importPrice) {
                    if (importPrice > next) sums[0] += (importAt / span) * (importPrice - next);
                    else sums[1] += (importAt / span) * (next - importPrice);
                    importPrice = next;
                }
                next = exportAhead ? _fromWord(exportWord, p, v.exportRate) : _periodicPrice(v, 1, h);
                if (next != exportPrice) {
                    if (exportPrice > next) sums[2] += (exportAt / span) * (exportPrice - next);
                    else sums[3] += (exportAt / span) * (next - exportPrice);
                    exportPrice = next;
                }
                importAt += importStep;
                exportAt += exportStep;
            }
        }
        (gap.costUp, gap.costDown, gap.creditUp, gap.creditDown) = (sums[0], sums[1], sums[2], sums[3]);
    }

    /// @dev Period `p`'s day-ahead price in its storage word (`_dayAhead`), or `fallbackRate` if unpublished.
    function _fromWord(uint256 word, uint256 p, uint256 fallbackRate) private pure returns (uint256) {
        uint256 entry = uint32(word >> (32 * (p & 7)));
        return entry == 0 ? fallbackRate : entry - 1;
    }

    /// @dev The terms of the periods [q, stop) of a stretch without published prices, by local half hour.
    function _halfHourSums(Gap memory gap, Tariff memory v, int256 offset, uint256 q, uint256 stop) private pure {
        if (v.importKind != BANDED && v.exportKind != BANDED) return; // one price throughout: no term
        unchecked {
            uint256 hq = uint256(int256(q + PERIODS_PER_DAY) + offset) % PERIODS_PER_DAY;
            for (uint256 h = 0; h < PERIODS_PER_DAY; ++h) {
                uint256 after_ = h == PERIODS_PER_DAY - 1 ? 0 : h + 1;
                uint256 importPrice = _periodicPrice(v, 0, h);
                uint256 nextImport = _periodicPrice(v, 0, after_);
                uint256 exportPrice = _periodicPrice(v, 1, h);
                uint256 nextExport = _periodicPrice(v, 1, after_);
                if (importPrice == nextImport && exportPrice == nextExport) continue;
                // The periods q' in [q, stop) whose local half hour is h: first, first + 48, ...
                uint256 first = q + (h + PERIODS_PER_DAY - hq) % PERIODS_PER_DAY;
                if (first >= stop) continue;
                uint256 n = (stop - 1 - first) / PERIODS_PER_DAY + 1;
                uint256 at = (first + 1) * PERIOD_SECONDS - gap.t0;
                if (importPrice != nextImport && gap.dImport != 0) {
                    uint256 sum = _floorSum(n, gap.span, gap.dImport * SECONDS_PER_DAY, gap.dImport * at);
                    if (importPrice > nextImport) gap.costUp += sum * (importPrice - nextImport);
                    else gap.costDown += sum * (nextImport - importPrice);
                }
                if (exportPrice != nextExport && gap.dExport != 0) {
                    uint256 sum = _floorSum(n, gap.span, gap.dExport * SECONDS_PER_DAY, gap.dExport * at);
                    if (exportPrice > nextExport) gap.creditUp += sum * (exportPrice - nextExport);
                    else gap.creditDown += sum * (nextExport - exportPrice);
                }
            }
        }
    }

    /// @dev Adds C(q) x (price(q) - price(q + 1)) for import and export.
    function _addTerm(
        Gap memory gap,
        uint256 q,
        uint256 importPrice,
        uint256 nextImport,
        uint256 exportPrice,
        uint256 nextExport
    ) private pure {
        unchecked {
            uint256 at = (q + 1) * PERIOD_SECONDS - gap.t0;
            if (importPrice != nextImport) {
                uint256 cum = (gap.dImport * at) / gap.span;
                if (importPrice > nextImport) gap.costUp += cum * (importPrice - nextImport);
                else gap.costDown += cum * (nextImport - importPrice);
            }
            if (exportPrice != nextExport) {
                uint256 cum = (gap.dExport * at) / gap.span;
                if (exportPrice > nextExport) gap.creditUp += cum * (exportPrice - nextExport);
                else gap.creditDown += cum * (nextExport - exportPrice);
            }
        }
    }

    /// @dev One side's price (0 import, 1 export) of period `p`, local half hour `h`, under version `v`.
    function _priceIn(Tariff memory v, uint256 side, uint256 p, uint256 h) private view returns (uint256) {
        uint8 kind = side == 0 ? v.importKind : v.exportKind;
        uint256 rate = side == 0 ? v.importRate : v.exportRate;
        if (kind == FLAT) return rate;
        if (kind == BANDED) {
            return side == 0 ? _band(v.importBands, v.importBandRates, h) : _band(v.exportBands, v.exportBandRates, h);
        }
        return _dayAheadPrice(p, side, rate);
    }

    /// @dev One side's price at local half hour `h` under version `v` where no day-ahead price is published.
    function _periodicPrice(Tariff memory v, uint256 side, uint256 h) private pure returns (uint256) {
        uint8 kind = side == 0 ? v.importKind : v.exportKind;
        if (kind != BANDED) return side == 0 ? v.importRate : v.exportRate;
        return side == 0 ? _band(v.importBands, v.importBandRates, h) : _band(v.exportBands, v.exportBandRates, h);
    }

    /// @dev The first period from which a clock change after `t` applies, if it is before period `before`
    /// (else type(uint256).max). A change at `at` applies to the periods starting at or after it.
    function _nextClockPeriod(uint256 t, uint256 before) private view returns (uint256) {
        if (_clockLastAt <= t) return type(uint256).max;
        uint256 limit = before * PERIOD_SECONDS;
        uint256 lastBucket = _clockLastBucket;
        for (uint256 b = t >> CLOCK_BUCKET_SHIFT; b <= lastBucket && (b << CLOCK_BUCKET_SHIFT) < limit; ++b) {
            uint256 word = _clock[b];
            for (uint256 k = 0; k < CLOCK_SLOTS; ++k) {
                uint256 at = uint32(word >> (8 + 40 * k));
                if (at == 0) break;
                if (at > t) return (at + PERIOD_SECONDS - 1) / PERIOD_SECONDS;
            }
        }
        return type(uint256).max;
    }

    /// @dev Whether day-ahead prices may be published for period `q` (it lies in a span of `_published`),
    /// and the first period after `q` where that may change (type(uint256).max: never).
    function _publishedSpanAt(uint256 q) private view returns (bool inside, uint256 until) {
        uint256 lo = 0;
        uint256 n = _published.length;
        uint256 hi = n;
        while (lo < hi) {
            uint256 mid = (lo + hi) >> 1;
            if (_published[mid] >> 32 > q) hi = mid;
            else lo = mid + 1;
        }
        if (lo == n) return (false, type(uint256).max);
        uint256 span = _published[lo];
        uint256 from = uint32(span);
        return from <= q ? (true, span >> 32) : (false, from);
    }

    /// @dev sum over i in [0, n) of floor((a x i + b) / m), in O(log m) steps (the Euclidean-like
    /// reduction of floor sums). Here n < 2^22, a < 2^65, b < 2^80, m < 2^32: nothing nears 2^256.
    function _floorSum(uint256 n, uint256 m, uint256 a, uint256 b) private pure returns (uint256 sum) {
        unchecked {
            while (true) {
                if (a >= m) {
                    sum += ((n * (n - 1)) / 2) * (a / m);
                    a %= m;
                }
                if (b >= m) {
                    sum += n * (b / m);
                    b %= m;
                }
                uint256 top = a * n + b;
                if (top < m) return sum;
                n = top / m;
                b = top % m;
                (m, a) = (a, m);
            }
        }
    }

    /// @dev Whether the record at calldata offset `at` carries the meter's EIP-712 signature of the
    /// reading (compact EIP-2098 form, low s only, as OpenZeppelin's ECDSA requires).
    function _signedByMeter(
        address meter,
        uint256 seq,
        uint256 readAt,
        uint256 importWh,
        uint256 exportWh,
        uint256 at,
        bytes32 domain
    ) private view returns (bool ok) {
        bytes32 typeHash = READING_TYPEHASH;
        uint256 halfOrder = HALF_ORDER;
        assembly ("memory-safe") {
            // Scratch memory past the free pointer: abi.encode(typeHash, meter, seq, timestamp, import,
            // export), then "\x19\x01" || domain || structHash, then ecrecover's input.
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            mstore(add(ptr, 0x20), meter)
            mstore(add(ptr, 0x40), seq)
            mstore(add(ptr, 0x60), readAt)
            mstore(add(ptr, 0x80), importWh)
            mstore(add(ptr, 0xa0), exportWh)
            let structHash := keccak256(ptr, 0xc0)
            mstore(ptr, shl(240, 0x1901))
            mstore(add(ptr, 0x02), domain)
            mstore(add(ptr, 0x22), structHash)
            let digest := keccak256(ptr, 0x42)
            let vs := calldataload(add(at, 72))
            let s := and(vs, 0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff)
            if iszero(gt(s, halfOrder)) {
                mstore(ptr, digest)
                mstore(add(ptr, 0x20), add(27, shr(255, vs)))
                mstore(add(ptr, 0x40), calldataload(add(at, 40)))
                mstore(add(ptr, 0x60), s)
                mstore(add(ptr, 0x80), 0)
                let success := staticcall(gas(), 1, ptr, 0x80, add(ptr, 0x80), 0x20)
                let signer := mload(add(ptr, 0x80))
                // A failed recovery leaves the zero address: never a signer, whatever `meter` is.
                ok := and(and(success, iszero(iszero(signer))), eq(signer, meter))
            }
        }
    }

    // ------------------------------------------------------------------ billing periods

    /// @notice Closes a meter's open billing period at its last reading and issues the bill.
    /// @param meter The meter whose period to close.
    function closeBillingPeriod(address meter) external onlyRole(OPERATOR_ROLE) {
        MeterInfo storage info = _info[meter];
        if (!info.registered) revert UnknownMeter(meter);
        uint256 word = _state[meter];
        uint32 periodId = info.periodId;
        uint64 periodStart = info.periodStart;
        uint64 periodEnd = uint32(word >> 33);
        if (periodEnd == periodStart) revert EmptyBillingPeriod(meter, periodId);
        uint48 importRegister = uint48(word >> 65);
        uint48 exportRegister = uint48(word >> 113);
        uint64 importWh;
        uint64 exportWh;
        unchecked {
            // Modulo 2^48: an exchange or register reset shifts the start registers (`_carried`).
            importWh = importRegister - info.periodStartImportWh;
            exportWh = exportRegister - info.periodStartExportWh;
        }
        uint64 cost = uint48(word >> 161);
        uint64 credit = uint64(word >> 209);
        uint64 standing = uint64(_standing(periodStart, periodEnd));

        _state[meter] = word & ((uint256(1) << 161) - 1);
        info.periodStart = uint32(periodEnd);
        info.periodId = periodId + 1;
        info.periodStartImportWh = importRegister;
        info.periodStartExportWh = exportRegister;
        emit BillIssued(
            meter,
            periodId,
            periodStart,
            periodEnd,
            importWh,
            exportWh,
            cost,
            credit,
            standing,
            int256(uint256(cost) + standing) - int256(uint256(credit))
        );
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
    /// @return lastEnergyWh Its import register at the last recorded reading, in Wh.
    /// @return lastExportWh Its export register at the last recorded reading, in Wh.
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
            uint64 lastEnergyWh,
            uint64 lastExportWh
        )
    {
        MeterInfo storage info = _info[meter];
        uint256 word = _state[meter];
        return (
            info.registered,
            word & 1 == 1,
            info.accountRef,
            info.region,
            uint32(word >> 1),
            uint32(word >> 33),
            uint48(word >> 65),
            uint48(word >> 113)
        );
    }

    /// @notice A meter's open billing period.
    /// @param meter The meter.
    /// @return periodId The period's number (1 for the first).
    /// @return periodStart When the period began.
    /// @return periodEnd The last reading's timestamp so far.
    /// @return importWh Energy imported in the period, in Wh.
    /// @return exportWh Energy exported in the period, in Wh.
    /// @return importCost Import charge in micropence.
    /// @return exportCredit Export credit in micropence.
    /// @return standingCharge Standing charge accrued from the period's start to its last reading.
    /// @return amountDue Import cost plus standing charge minus export credit (negative: in credit).
    function openBill(address meter)
        external
        view
        returns (
            uint32 periodId,
            uint64 periodStart,
            uint64 periodEnd,
            uint64 importWh,
            uint64 exportWh,
            uint64 importCost,
            uint64 exportCredit,
            uint64 standingCharge,
            int256 amountDue
        )
    {
        MeterInfo storage info = _info[meter];
        if (!info.registered) revert UnknownMeter(meter);
        uint256 word = _state[meter];
        periodId = info.periodId;
        periodStart = info.periodStart;
        periodEnd = uint32(word >> 33);
        unchecked {
            // Modulo 2^48, as in `closeBillingPeriod`.
            importWh = uint48(word >> 65) - info.periodStartImportWh;
            exportWh = uint48(word >> 113) - info.periodStartExportWh;
        }
        importCost = uint48(word >> 161);
        exportCredit = uint64(word >> 209);
        standingCharge = uint64(_standing(periodStart, periodEnd));
        amountDue = int256(uint256(importCost) + standingCharge) - int256(uint256(exportCredit));
    }

    /// @notice How many tariff versions there are (the newest may not be in force yet).
    /// @return The count.
    function tariffCount() external view returns (uint256) {
        return _versions.length;
    }

    /// @notice A tariff version by number (1 for the first).
    /// @param version The version's number.
    /// @return The version.
    function tariffVersion(uint32 version) external view returns (Tariff memory) {
        return _versions[version - 1];
    }

    /// @notice The number of the tariff version in force at `time`.
    /// @param time Unix seconds.
    /// @return The version's number.
    function tariffVersionAt(uint64 time) external view returns (uint32) {
        return uint32(_versionIndexAt(time) + 1);
    }

    /// @notice The import and export prices of the settlement period that contains `time`.
    /// @param time Unix seconds.
    /// @return importPrice Millipence per kWh.
    /// @return exportPrice Millipence per kWh.
    function pricesAt(uint64 time) external view returns (uint32 importPrice, uint32 exportPrice) {
        (uint256 i, uint256 e) = _pricesOf(time / PERIOD_SECONDS);
        return (uint32(i), uint32(e));
    }

    /// @notice The UK clock's offset from UTC at `time`, as published.
    /// @param time Unix seconds.
    /// @return Minutes ahead of UTC.
    function clockOffsetAt(uint64 time) external view returns (int16) {
        return int16(_offsetAt(time) * 30);
    }

    /// @notice The standing charge for the seconds [start, end), rounded down once.
    /// @param start Unix seconds.
    /// @param end Unix seconds.
    /// @return Micropence.
    function standingChargeBetween(uint64 start, uint64 end) external view returns (uint256) {
        return _standing(start, end);
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
