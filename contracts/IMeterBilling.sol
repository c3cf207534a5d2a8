// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice The views of SmartMeterBilling that demand response reads.
interface IMeterBilling {
    /// @notice A meter's registration and reading state (see SmartMeterBilling).
    function meterState(address meter)
        external
        view
        returns (bool, bool, bytes32, bytes32, uint64, uint64, uint64, uint64);

    /// @notice A meter's open billing period (see SmartMeterBilling).
    function openBill(address meter)
        external
        view
        returns (uint32, uint64, uint64, uint64, uint64, uint64, uint64, uint64, int256);

    /// @notice Greatest plausible supply power in watts (see SmartMeterBilling).
    function maxPowerW() external view returns (uint64);
}
