/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import preact from "@preact/preset-vite";

// The master (default http://127.0.0.1:8080) answers /api and /proxy; `npm run dev` forwards
// both so the console can be developed against a running cluster. FLOTILLA_MASTER overrides.
const master = process.env.FLOTILLA_MASTER ?? "http://127.0.0.1:8080";

export default defineConfig({
  base: "/",
  plugins: [preact()],
  server: {
    proxy: {
      "/api": { target: master, changeOrigin: false },
      "/proxy": { target: master, changeOrigin: false, ws: true },
    },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    target: "es2022",
  },
  test: {
    environment: "node",
    include: ["src/**/*.test.ts"],
  },
});
