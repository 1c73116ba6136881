// Hash routing (`/#/agents`): the server only ever serves `/`, so the edge needs no route per page.
import { useEffect, useState } from "react";

export const PAGES = ["agents", "try", "voice", "usage", "keys", "limits"] as const;
export type PageName = (typeof PAGES)[number];

export function currentPage(hash: string = window.location.hash): PageName {
  const name = hash.replace(/^#\/?/, "").split(/[/?]/)[0];
  return (PAGES as readonly string[]).includes(name) ? (name as PageName) : "agents";
}

export function useHashPage(): PageName {
  const [page, setPage] = useState<PageName>(() => currentPage());
  useEffect(() => {
    const update = () => setPage(currentPage());
    window.addEventListener("hashchange", update);
    return () => window.removeEventListener("hashchange", update);
  }, []);
  return page;
}

export function useOnline(): boolean {
  const [online, setOnline] = useState(() => navigator.onLine);
  useEffect(() => {
    const on = () => setOnline(true);
    const off = () => setOnline(false);
    window.addEventListener("online", on);
    window.addEventListener("offline", off);
    return () => {
      window.removeEventListener("online", on);
      window.removeEventListener("offline", off);
    };
  }, []);
  return online;
}
