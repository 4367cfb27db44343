import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { User } from "./types";

export interface Auth {
  /** undefined while /api/v1/me is in flight, null when signed out. */
  user: User | null | undefined;
  signedIn: (user: User, csrf: string | undefined) => void;
  signOut: () => Promise<void>;
}

export const AuthContext = createContext<Auth>({
  user: undefined,
  signedIn: () => {},
  signOut: async () => {},
});

export function useAuth(): Auth {
  return useContext(AuthContext);
}

/** Whether `user` may change an experiment/task owned by `owner` (its owner or an admin). */
export function mayChange(user: User | null | undefined, owner: string): boolean {
  return !!user && (user.admin || user.username === owner);
}
