// Reading the contract's logs and views over JSON-RPC (viem), as of one block, for the verifier.
//
// The deployment file (deployments/<chainId>.json) gives the contract's address, its ABI and the
// block it was deployed in (and the DemandResponse contract's address and ABI, when it has one);
// nothing else of the project is used. Logs are read in chunks of
// blocks from the deployment's block to one pinned block, and the views are called at that same
// block, so readings mined meanwhile cannot make the logs and the views disagree.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { createPublicClient, decodeEventLog, http, pad, toEventSelector } from "viem";

/** A failure to check at all (not a disagreement): the message says what to do. */
export class CannotCheck extends Error {}

const HERE = dirname(fileURLToPath(import.meta.url));
/** Events that price every meter's energy: read whole even when one meter is checked. */
const SCHEDULE_EVENTS = ["TariffChanged", "TariffWithdrawn", "ClockChangeAdded", "ClockChangeWithdrawn",
  "DayAheadPricesPublished"];

/** The deployment file: given, or deployments/<chainId>.json in the current folder or the project's. */
export function loadDeployment(path, chainId) {
  const candidates = path ? [resolve(path)]
    : [resolve("deployments", `${chainId}.json`), join(HERE, "..", "..", "deployments", `${chainId}.json`)];
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new CannotCheck(`no deployment file at ${candidates.join(" or ")}; give the operator's with --deployment FILE`);
  }
  let data;
  try {
    data = JSON.parse(readFileSync(found, "utf8"));
  } catch (err) {
    throw new CannotCheck(`${found} is not a deployment file (${err.message})`);
  }
  if (!/^0x[0-9a-fA-F]{40}$/.test(data.address ?? "") || !Array.isArray(data.abi) || data.block === undefined) {
    throw new CannotCheck(`${found} lacks the contract's address, abi or block`);
  }
  const block = BigInt(data.block);
  return { path: found, address: data.address, abi: data.abi, block, chainId: data.chainId,
    demandResponse: demandResponseOf(data, found, block) };
}

/** The deployment's DemandResponse contract (its logs read from the same block), or null when it has none. */
function demandResponseOf(data, found, block) {
  const record = data.demandResponse;
  if (record === undefined || record === null) return null;
  if (!/^0x[0-9a-fA-F]{40}$/.test(record.address ?? "") || !Array.isArray(record.abi)) {
    throw new CannotCheck(`${found} lacks the demand-response contract's address or abi`);
  }
  return { address: record.address, abi: record.abi, block };
}

/** A client for the node at `rpc`, or CannotCheck saying it does not answer. */
export async function connect(rpc) {
  const client = createPublicClient({ transport: http(rpc, { timeout: 30_000, retryCount: 2 }) });
  try {
    return { client, chainId: await client.getChainId(), head: await client.getBlockNumber() };
  } catch (err) {
    throw new CannotCheck(`no JSON-RPC node answers at ${rpc} (${err.shortMessage ?? err.message}); check the URL`);
  }
}

function topicOf(abi, name) {
  const item = abi.find((i) => i.type === "event" && i.name === name);
  if (!item) throw new CannotCheck(`the deployment's ABI has no ${name} event; is it this project's contract?`);
  return toEventSelector(item);
}

async function logs(client, address, from, to, topics, chunk) {
  const out = [];
  for (let start = from; start <= to; start += chunk) {
    const end = start + chunk - 1n < to ? start + chunk - 1n : to;
    out.push(...await client.request({
      method: "eth_getLogs",
      params: [{ address, fromBlock: `0x${start.toString(16)}`, toBlock: `0x${end.toString(16)}`, topics }],
    }));
  }
  return out;
}

/**
 * Every event of the contract up to `block`, decoded, in chain order (block, then log index); of the
 * meters given only, when `meters` is not empty (every event about a meter has it as first topic).
 */
export async function readEvents(client, deployment, block, meters, chunk) {
  const { abi, address } = deployment;
  let raw;
  if (meters.length === 0) {
    raw = await logs(client, address, deployment.block, block, [], chunk);
  } else {
    const schedule = SCHEDULE_EVENTS.map((name) => topicOf(abi, name));
    raw = await logs(client, address, deployment.block, block, [schedule], chunk);
    const account = await accountMeters(client, deployment, block, meters, chunk);
    raw.push(...await logs(client, address, deployment.block, block,
      [null, account.map((m) => pad(m.toLowerCase(), { size: 32 }))], chunk));
  }
  const events = [];
  for (const log of raw) {
    try {
      const decoded = decodeEventLog({ abi, data: log.data, topics: log.topics, strict: true });
      events.push({ name: decoded.eventName, args: decoded.args, block: BigInt(log.blockNumber),
        index: BigInt(log.logIndex), tx: log.transactionHash });
    } catch {
      // not one of the ABI's events (or not decodable): nothing it says can be checked
    }
  }
  return events.sort(chainOrder);
}

/** The meters given and every meter their accounts had or passed to in exchanges (MeterExchanged: the old meter
 * is the first topic, the new one the second): the bill of one account runs across them. */
async function accountMeters(client, deployment, block, meters, chunk) {
  const exchanges = await logs(client, deployment.address, deployment.block, block,
    [topicOf(deployment.abi, "MeterExchanged")], chunk);
  const pairs = exchanges.map((log) => [`0x${log.topics[1].slice(26)}`, `0x${log.topics[2].slice(26)}`]);
  const found = new Set(meters.map((m) => m.toLowerCase()));
  for (let grew = true; grew;) {
    grew = false;
    for (const [old, fresh] of pairs) {
      if (found.has(old) !== found.has(fresh)) {
        found.add(old);
        found.add(fresh);
        grew = true;
      }
    }
  }
  return [...found];
}

/** Events in chain order: by block, then by log index (which runs across every contract in a block). */
export function chainOrder(a, b) {
  if (a.block !== b.block) return a.block < b.block ? -1 : 1;
  return a.index < b.index ? -1 : a.index > b.index ? 1 : 0;
}

/** The contract's openBill view for a meter at `block`, by field name. */
export async function openBill(client, deployment, meter, block) {
  const values = await client.readContract({
    address: deployment.address, abi: deployment.abi, functionName: "openBill", args: [meter], blockNumber: block,
  });
  const names = ["periodId", "periodStart", "periodEnd", "importWh", "exportWh", "importCost", "exportCredit",
    "standingCharge", "amountDue"];
  return Object.fromEntries(names.map((name, i) => [name, BigInt(values[i])]));
}

/** The DemandResponse contract's maxPowerW (the bound on every baseline: that power over the window) at `block`. */
export async function maxPowerW(client, dr, block) {
  return BigInt(await client.readContract({ address: dr.address, abi: dr.abi, functionName: "maxPowerW",
    blockNumber: block }));
}

/** Whether code is deployed at the contract's address (not after a chain reset); any {address} will do. */
export async function hasCode(client, deployment, block) {
  const code = await client.getCode({ address: deployment.address, blockNumber: block });
  return code !== undefined && code !== "0x";
}
