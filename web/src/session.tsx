// The logged-in API key: kept in sessionStorage (gone when the tab closes), checked with
// GET /v1/me, which names the tenant and the key's scopes.
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { api, setKeySource } from "./api/client";
import type { CallerIdentity, Scope } from "./api/types";

export const KEY_STORAGE = "vocalbridge.apiKey";
const SCOPE_RANK: Record<string, number> = { SCOPE_READ: 1, SCOPE_WRITE: 2, SCOPE_ADMIN: 3, SCOPE_OPERATOR: 4 };

export interface SessionState {
  identity: CallerIdentity | null;
  /** True while a stored key is being checked at start-up. */
  restoring: boolean;
  logIn(key: string): Promise<CallerIdentity>;
  logOut(): void;
  /** Whether the key holds `scope` (scopes nest: ADMIN ⊃ WRITE ⊃ READ). */
  can(scope: Scope): boolean;
}

const SessionContext = createContext<SessionState | null>(null);

export function SessionProvider({ children }: { children: ReactNode }) {
  const [identity, setIdentity] = useState<CallerIdentity | null>(null);
  const [restoring, setRestoring] = useState(() => !!sessionStorage.getItem(KEY_STORAGE));

  useEffect(() => {
    setKeySource(() => sessionStorage.getItem(KEY_STORAGE));
  }, []);

  const logIn = useCallback(async (key: string) => {
    const me = await api<CallerIdentity>("/v1/me", { key: key.trim() });
    sessionStorage.setItem(KEY_STORAGE, key.trim());
    setKeySource(() => sessionStorage.getItem(KEY_STORAGE));
    setIdentity(me);
    return me;
  }, []);

  const logOut = useCallback(() => {
    sessionStorage.removeItem(KEY_STORAGE);
    setIdentity(null);
  }, []);

  useEffect(() => {
    const stored = sessionStorage.getItem(KEY_STORAGE);
    if (!stored) return;
    logIn(stored)
      .catch(() => sessionStorage.removeItem(KEY_STORAGE))
      .finally(() => setRestoring(false));
  }, [logIn]);

  const can = useCallback(
    (scope: Scope) => {
      const best = Math.max(0, ...(identity?.scopes ?? []).filter((s) => s !== "SCOPE_OPERATOR").map((s) => SCOPE_RANK[s] ?? 0));
      return best >= (SCOPE_RANK[scope] ?? 99);
    },
    [identity],
  );

  const value = useMemo(() => ({ identity, restoring, logIn, logOut, can }), [identity, restoring, logIn, logOut, can]);
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): SessionState {
  const value = useContext(SessionContext);
  if (!value) throw new Error("useSession outside SessionProvider");
  return value;
}
