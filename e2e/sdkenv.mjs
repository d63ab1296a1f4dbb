// Prepares the Node process for matrix-js-sdk before the SDK is loaded.
// harness.mjs imports this file first; ES modules evaluate in import order.
//
// 1. Quiet logger. The SDK creates child loggers at module load
//    (logger.getChild(...)); each child copies its parent's methodFactory
//    when created and sets its own level to DEBUG, so setting a level on the
//    root afterwards is not enough: the root's methodFactory has to be
//    replaced before any child exists. ENGRAM_E2E_SDK_LOG=1 keeps the output.
//
// 2. Long timers do not hold the process open. The SDK arms a plain
//    setTimeout of pollTimeout + 80 s for every /sync request
//    (http-api/utils.ts timeoutSignal) and never clears it, so a test file
//    would linger ~85 s after its last client stopped. Timers of a minute or
//    more are unref'd: they still fire while the process is alive, they just
//    do not keep it alive. Nothing in the tests waits that long on purpose.
import { logger } from "matrix-js-sdk/lib/logger.js";

if (!process.env.ENGRAM_E2E_SDK_LOG) {
    const noop = () => {};
    logger.methodFactory = () => noop;
    logger.setLevel("silent", false);
    logger.rebuild?.();
}

const LONG_TIMER_MS = 60_000;
const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = function setTimeoutUnrefLong(fn, ms, ...args) {
    const t = realSetTimeout(fn, ms, ...args);
    if (typeof ms === "number" && ms >= LONG_TIMER_MS) t?.unref?.();
    return t;
};
// Keep util.promisify(setTimeout) and friends working.
Object.assign(globalThis.setTimeout, realSetTimeout);

export { logger };
