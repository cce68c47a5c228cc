// Infrastructure health.
import { shell } from "./common.js";

await shell();
