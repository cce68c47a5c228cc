// Execution lineage.
import { shell } from "./common.js";

await shell();
