import { describe, expect, it } from "vitest";
import { findRoute, hashPath, hashQuery, matchPattern } from "./router";

describe("matchPattern", () => {
  it("matches static and parameter segments", () => {
    expect(matchPattern("/experiments", "/experiments")).toEqual({});
    expect(matchPattern("/experiments/:id", "/experiments/12")).toEqual({ id: "12" });
    expect(matchPattern("/trials/:id", "/trials/7/")).toEqual({ id: "7" });
  });
  it("refuses other paths", () => {
    expect(matchPattern("/experiments/:id", "/experiments")).toBeNull();
    expect(matchPattern("/experiments", "/experiments/12")).toBeNull();
    expect(matchPattern("/experiments/:id", "/trials/12")).toBeNull();
    expect(matchPattern("/users", "/userss")).toBeNull();
  });
  it("decodes parameters and refuses broken escapes", () => {
    expect(matchPattern("/x/:name", "/x/a%20b")).toEqual({ name: "a b" });
    expect(matchPattern("/x/:name", "/x/%E0%A4%A")).toBeNull();
  });
});

describe("hashPath and hashQuery", () => {
  it("splits the hash", () => {
    expect(hashPath("")).toBe("/");
    expect(hashPath("#")).toBe("/");
    expect(hashPath("#/experiments/3?metric=loss")).toBe("/experiments/3");
    expect(hashPath("#trials/4")).toBe("/trials/4");
    expect(hashQuery("#/experiments?user=a&state=ACTIVE").get("user")).toBe("a");
    expect(hashQuery("#/experiments").toString()).toBe("");
  });
});

describe("findRoute", () => {
  const routes = [
    { pattern: "/experiments", name: "experiments" },
    { pattern: "/experiments/:id", name: "experiment" },
    { pattern: "/trials/:id", name: "trial" },
  ];
  it("finds the first matching route with its params", () => {
    expect(findRoute(routes, "/experiments")?.route.name).toBe("experiments");
    const hit = findRoute(routes, "/experiments/5");
    expect(hit?.route.name).toBe("experiment");
    expect(hit?.params).toEqual({ id: "5" });
    expect(findRoute(routes, "/nowhere")).toBeNull();
  });
});
