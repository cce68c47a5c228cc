// Governance console.
import { shell } from "./common.js";

await shell();
