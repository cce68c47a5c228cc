// Runtime governance demo.
import { shell } from "./common.js";

await shell();
