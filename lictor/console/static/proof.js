// Proof viewer.
import { shell } from "./common.js";

await shell();
