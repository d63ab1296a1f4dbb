// Silences matrix-js-sdk's logger before the SDK itself is loaded.
//
// The SDK creates child loggers at module load (logger.getChild(...)), and
// each child copies its parent's methodFactory at creation and sets its own
// level to DEBUG, so setting a level on the root afterwards is not enough:
// the root's methodFactory has to be replaced before any child exists. ES
// modules evaluate in import order, so harness.mjs imports this file before
// "matrix-js-sdk". Set ENGRAM_E2E_SDK_LOG=1 to keep the SDK's output.
import { logger } from "matrix-js-sdk/lib/logger.js";

if (!process.env.ENGRAM_E2E_SDK_LOG) {
    const noop = () => {};
    logger.methodFactory = () => noop;
    logger.setLevel("silent", false);
    logger.rebuild?.();
}

export { logger };
