// Prepares the Node process for matrix-js-sdk before the SDK is loaded.
// harness.mjs imports this file first; ES modules evaluate in import order.
//
// 1. Quiet logger. The SDK creates child loggers at module load
//    (logger.getChild(...)); each child copies its parent's methodFactory
//    when created and sets its own level to DEBUG, so setting a level on the
//    root afterwards is not enough: the root's methodFactory has to be
//    replaced before any child exists. ENGRAM_E2E_SDK_LOG=1 keeps the output.
//
// 2. Request watchdogs do not hold the process open. The SDK arms a plain
//    setTimeout for each request with a local timeout (http-api/utils.ts
//    timeoutSignal: pollTimeout + 80 s for /sync, 15 s for the keep-alive
//    ping) and never clears it, so a test file lingered for up to ~85 s
//    after its last client had stopped. Those timers are unref'd: they still
//    fire while the process is alive (a pending request keeps it alive
//    anyway through its socket), they just do not keep it alive on their
//    own. Only timers armed from timeoutSignal are touched.
import { logger } from "matrix-js-sdk/lib/logger.js";

if (!process.env.ENGRAM_E2E_SDK_LOG) {
    const noop = () => {};
    logger.methodFactory = () => noop;
    logger.setLevel("silent", false);
    logger.rebuild?.();
}

const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = function setTimeoutSdkWatchdog(fn, ms, ...args) {
    const t = realSetTimeout(fn, ms, ...args);
    if (typeof ms === "number" && ms >= 1000 && /\btimeoutSignal\b/.test(new Error().stack ?? "")) t?.unref?.();
    return t;
};
// Keep util.promisify(setTimeout) and friends working.
Object.assign(globalThis.setTimeout, realSetTimeout);

export { logger };
