import type { ComponentType } from "preact";
import type { Params } from "./router";
import { ExperimentView } from "./views/experiment";
import { ExperimentsView } from "./views/experiments";
import { LoginView } from "./views/login";
import { TrialView } from "./views/trial";
import { ClusterView } from "./views/cluster";
import { CostView } from "./views/cost";
import { EventsView } from "./views/events";
import { FleetView } from "./views/fleet";
import { QueueView } from "./views/queue";
import { TasksView } from "./views/tasks";
import { UsersView } from "./views/users";

export interface RouteProps {
  params: Params;
}

export interface Route {
  /** "/experiments/:id" (matched by router.matchPattern). */
  pattern: string;
  /** The view's name: its root is data-testid="view-<name>". */
  name: string;
  component: ComponentType<RouteProps>;
  /** Admin-only: hidden from others' nav; visiting shows "Admins only". */
  admin: boolean;
  /** The nav link's text; routes without one are not in the nav. */
  nav?: string;
  /** Reachable signed out (the login page only). */
  public?: boolean;
}

export const routes: Route[] = [
  { pattern: "/login", name: "login", component: LoginView, admin: false, public: true },
  {
    pattern: "/experiments",
    name: "experiments",
    component: ExperimentsView,
    admin: false,
    nav: "Experiments",
  },
  {
    pattern: "/experiments/:id",
    name: "experiment",
    component: ExperimentView,
    admin: false,
  },
  { pattern: "/trials/:id", name: "trial", component: TrialView, admin: false },
  {
    pattern: "/tasks",
    name: "tasks",
    component: TasksView,
    admin: false,
    nav: "Tasks",
  },
  {
    pattern: "/queue",
    name: "queue",
    component: QueueView,
    admin: false,
    nav: "Queue",
  },
  { pattern: "/cost", name: "cost", component: CostView, admin: false, nav: "Cost" },
  {
    pattern: "/cluster",
    name: "cluster",
    component: ClusterView,
    admin: true,
    nav: "Cluster",
  },
  {
    pattern: "/fleet",
    name: "fleet",
    component: FleetView,
    admin: true,
    nav: "Fleet",
  },
  {
    pattern: "/events",
    name: "events",
    component: EventsView,
    admin: true,
    nav: "Scale events",
  },
  {
    pattern: "/users",
    name: "users",
    component: UsersView,
    admin: true,
    nav: "Users",
  },
];
