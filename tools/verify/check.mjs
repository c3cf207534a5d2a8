#!/usr/bin/env node
// An independent check of the billing contract's bills, for customers and auditors.
//
//   node tools/verify/check.mjs --rpc http://127.0.0.1:8545 [--meter 0x...]... [--deployment FILE] [--json]
//
// It reads the contract's logs from its deployment block (the address, ABI and block come from the
// deployment file, deployments/<chainId>.json), recomputes every meter's issued bills and open bill
// from the readings and the tariff, clock-change and day-ahead price events with integer arithmetic
// (tools/verify/bill.mjs, written from the published rules, not from the project's code), and holds
// them to the contract's own figures: every ReadingRecorded event's running totals, every
// BillIssued event and the openBill view. A meter exchange (MeterExchanged) or register reset (RegisterReset)
// prices its final read like a reading and carries the open bill on to the new meter or the restarted
// registers; its running totals are held to ours too. It prints one row per meter and a summary line.
//
// When the deployment has the DemandResponse contract, it also recomputes every CreditApplied credit:
// the meter's baseline and actual energy over the event's window from its readings and the events'
// windows (tools/verify/baseline.mjs), the amount at the event's credit rate and the billing period it
// went on (tools/verify/credits.mjs), and prints a second summary line (when there is any credit).
//
// Exit status: 0 when every figure agrees, 1 when any disagrees, 2 when it could not check (a wrong
// URL or file, a meter not on the contract).

import { pathToFileURL } from "node:url";

import { Replay, Schedule, kwh, pounds, unpackRecord } from "./bill.mjs";
import { CannotCheck, chainOrder, connect, hasCode, loadDeployment, maxPowerW, openBill, readEvents } from "./chain.mjs";
import { Credits } from "./credits.mjs";

const USAGE = `usage: node tools/verify/check.mjs --rpc URL [--meter 0x...]... [--deployment FILE] [--chunk BLOCKS] [--json]

  --rpc URL          the chain's JSON-RPC endpoint, e.g. http://127.0.0.1:8545
  --meter 0x...      check this meter only (repeat for several); default: every meter on the contract
  --deployment FILE  the deployment file (default: deployments/<chainId>.json)
  --chunk BLOCKS     blocks per eth_getLogs request (default 5000)
  --json             print the result as JSON instead of a table`;

/** The command line's options, or CannotCheck naming what is wrong. */
export function parseArgs(argv) {
  const options = { rpc: null, meters: [], deployment: null, chunk: 5000n, json: false };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new CannotCheck(`${arg} needs a value\n${USAGE}`);
      i += 1;
      return argv[i];
    };
    if (arg === "--rpc") options.rpc = value();
    else if (arg === "--meter") {
      const meter = value();
      if (!/^0x[0-9a-fA-F]{40}$/.test(meter)) throw new CannotCheck(`--meter ${meter} is not an address: 0x and 40 hex digits`);
      options.meters.push(meter);
    } else if (arg === "--deployment") options.deployment = value();
    else if (arg === "--chunk") {
      const text = value();
      if (!/^[1-9][0-9]{0,6}$/.test(text)) throw new CannotCheck(`--chunk ${text} must be a number of blocks, 1 or more`);
      options.chunk = BigInt(text);
    } else if (arg === "--json") options.json = true;
    else if (arg === "--help" || arg === "-h") throw new CannotCheck(USAGE);
    else throw new CannotCheck(`unknown argument ${arg}\n${USAGE}`);
  }
  if (!options.rpc) throw new CannotCheck(`--rpc URL is required\n${USAGE}`);
  return options;
}

/** Recompute and compare; returns the result (rows, summary) without printing. */
export async function verify(options) {
  const { client, chainId, head } = await connect(options.rpc);
  const deployment = loadDeployment(options.deployment, chainId);
  if (deployment.chainId !== undefined && BigInt(deployment.chainId) !== BigInt(chainId)) {
    throw new CannotCheck(`${deployment.path} is for chain ${deployment.chainId}, but the node at ${options.rpc} is chain ${chainId}`);
  }
  if (!await hasCode(client, deployment, head)) {
    throw new CannotCheck(`no contract at ${deployment.address} on chain ${chainId} (was the chain reset?)`);
  }
  const events = await readEvents(client, deployment, head, options.meters, options.chunk);
  const dr = deployment.demandResponse;
  if (dr !== null && !await hasCode(client, dr, head)) {
    throw new CannotCheck(`no demand-response contract at ${dr.address} on chain ${chainId} (was the chain reset?)`);
  }
  const drEvents = dr === null ? [] : await readEvents(client, dr, head, [], options.chunk);
  const schedule = new Schedule();
  for (const e of events) {
    if (e.name === "TariffChanged") schedule.addVersion(e.args);
    else if (e.name === "TariffWithdrawn") schedule.withdrawVersion(e.args.version);
    else if (e.name === "ClockChangeAdded") schedule.addClockChange(e.args.at, e.args.offsetMinutes);
    else if (e.name === "ClockChangeWithdrawn") schedule.withdrawClockChange(e.args.at);
    else if (e.name === "DayAheadPricesPublished") schedule.publish(e.args.from, e.args.importPrices, e.args.exportPrices);
  }
  if (schedule.versions.length === 0) throw new CannotCheck("no TariffChanged event found: nothing prices the energy");
  const replay = new Replay(schedule);
  const credits = new Credits(dr === null ? null : await maxPowerW(client, dr, head));
  for (const e of [...events, ...drEvents].sort(chainOrder)) {
    const where = `block ${e.block}, tx ${e.tx}`;
    if (e.name === "MeterRegistered") {
      replay.register(e.args, where);
      credits.register(e.args);
    } else if (e.name === "ReadingRecorded") {
      replay.reading(e.args, where);
      credits.reading(e.args);
    } else if (e.name === "ReadingRejected") replay.rejected(e.args, where);
    else if (e.name === "BillIssued") replay.issue(e.args, where);
    else if (e.name === "MeterExchanged") {
      replay.exchange(e.args, where);
      const r = unpackRecord(e.args.finalRecord);
      credits.register({ meter: e.args.newMeter, openedAt: r.timestamp, openingWh: e.args.openingImportWh });
    } else if (e.name === "RegisterReset") replay.reset(e.args, where);
    else if (e.name === "DemandResponseEvent") credits.announce(e.args);
    else if (e.name === "DemandResponseCancelled") credits.cancel(e.args);
    else if (e.name === "OptedOut") credits.optOut(e.args);
    else if (e.name === "OptOutWithdrawn") credits.withdraw(e.args);
    else if (e.name === "CreditApplied") {
      const m = replay.meter(e.args.meter); // its open period now is the one the credit should go on
      if (m !== undefined || options.meters.length === 0) credits.applied(e.args, where, m?.periodId);
    }
  }
  const wanted = options.meters.length ? options.meters : [...replay.meters.values()].map((m) => m.address);
  const rows = [];
  for (const address of wanted) {
    const m = replay.meter(address);
    if (m === undefined) throw new CannotCheck(`meter ${address} is not registered on the contract at ${deployment.address}`);
    replay.checkOpen(address, await openBill(client, deployment, m.address, head));
    rows.push({
      meter: m.address, readings: m.readings, bills: m.bills.length, open: m.open,
      agrees: m.problems.length === 0, problems: m.problems,
    });
  }
  const creditRows = dr === null ? null : credits.check();
  return {
    chainId, contract: deployment.address, fromBlock: deployment.block, toBlock: head, events: events.length, rows,
    credits: dr === null ? null : { contract: dr.address, events: drEvents.length, rows: creditRows,
      agrees: creditRows.every((r) => r.agrees) },
    agrees: rows.every((r) => r.agrees) && (creditRows ?? []).every((r) => r.agrees),
  };
}

function table(result) {
  const headers = ["Meter", "Readings", "Bills", "Open period", "Import kWh", "Export kWh", "Amount due", "Check"];
  const cells = result.rows.map((r) => [r.meter, String(r.readings), String(r.bills), String(r.open.periodId),
    kwh(r.open.importWh), kwh(r.open.exportWh), pounds(r.open.amountDue), r.agrees ? "agrees" : "DISAGREES"]);
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c) => c.map((text, i) => (i === 0 || i === c.length - 1 ? text.padEnd(widths[i])
    : text.padStart(widths[i]))).join("  ").trimEnd();
  return [line(headers), ...cells.map(line)];
}

function summary(result) {
  const readings = result.rows.reduce((n, r) => n + r.readings, 0);
  const bills = result.rows.reduce((n, r) => n + r.bills, 0);
  const wrong = result.rows.filter((r) => !r.agrees).length;
  const n = (x) => x.toLocaleString("en-GB");
  const what = `${n(result.rows.length)} meters, ${n(readings)} readings, ${n(bills)} issued bills and `
    + `${n(result.rows.length)} open bills recomputed from ${n(result.events)} events of contract ${result.contract} `
    + `on chain ${result.chainId} `
    + `(blocks ${result.fromBlock} to ${result.toBlock})`;
  return wrong === 0 ? `${what}: all agree with the contract`
    : `${what}: ${wrong} of ${result.rows.length} meters DISAGREE with the contract`;
}

function creditSummary(credits) {
  const wrong = credits.rows.filter((r) => !r.agrees).length;
  const n = (x) => x.toLocaleString("en-GB");
  const what = `${n(credits.rows.length)} demand-response credits recomputed from the readings and `
    + `${n(credits.events)} events of contract ${credits.contract}`;
  return wrong === 0 ? `${what}: all agree` : `${what}: ${wrong} of ${credits.rows.length} credits DISAGREE`;
}

function asJson(result) {
  return JSON.stringify(result, (key, value) => (typeof value === "bigint" ? value.toString() : value), 2);
}

/** Run the command line; returns the exit status. */
export async function main(argv, out = console.log, err = console.error) {
  let options;
  let result;
  try {
    options = parseArgs(argv);
    result = await verify(options);
  } catch (error) {
    if (!(error instanceof CannotCheck)) throw error;
    err(`check: cannot check: ${error.message}`);
    return 2;
  }
  if (options.json) {
    const credits = result.credits === null ? null : { ...result.credits, summary: creditSummary(result.credits) };
    out(asJson({ ...result, credits, summary: summary(result) }));
  } else {
    for (const line of table(result)) out(line);
    for (const row of result.rows.filter((r) => !r.agrees)) {
      for (const problem of row.problems) out(`${row.meter}: ${problem}`);
    }
    out(summary(result));
    if (result.credits !== null && result.credits.rows.length > 0) { // no credits yet: nothing more to say
      for (const row of result.credits.rows.filter((r) => !r.agrees)) {
        out(`event ${row.eventId}, meter ${row.meter} (${row.where}): ${row.problems.join("; ")}`);
      }
      out(creditSummary(result.credits));
    }
  }
  return result.agrees ? 0 : 1;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then((status) => { process.exitCode = status; });
}
