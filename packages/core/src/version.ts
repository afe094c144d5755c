/** The gm release; kept in step with the root package.json by scripts/setup.mjs checks. */
export const GM_VERSION = "0.1.0";
