import { lazy, Suspense } from "react";
import { Loading } from "./components/ui";
import { LoginPage } from "./pages/Login";
import { useHashPage, useOnline, type PageName } from "./router";
import { SessionProvider, useSession } from "./session";
import { ToastProvider } from "./toast";
import { formatScopes } from "./pages/Login";
import { AgentsPage } from "./pages/Agents";
import { TryItPage } from "./pages/TryIt";
import { ApiKeysPage } from "./pages/ApiKeys";
import { LimitsPage } from "./pages/Limits";
import { VoicePage } from "./pages/Voice";

// The usage page carries the chart library: loaded when first opened.
const UsagePage = lazy(() => import("./pages/Usage"));

const NAV: { page: PageName; label: string }[] = [
  { page: "agents", label: "Agents" },
  { page: "try", label: "Try it" },
  { page: "voice", label: "Voice" },
  { page: "usage", label: "Usage" },
  { page: "keys", label: "API keys" },
  { page: "limits", label: "Limits & budgets" },
];

function Shell() {
  const { identity, restoring, logOut } = useSession();
  const page = useHashPage();
  const online = useOnline();

  if (restoring) return <Loading label="Checking your key…" />;
  if (!identity) return <LoginPage />;

  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <span className="brand">VocalBridge</span>
        <nav aria-label="Console">
          <ul>
            {NAV.map((item) => (
              <li key={item.page}>
                <a href={`#/${item.page}`} aria-current={page === item.page ? "page" : undefined}>
                  {item.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div className="who" data-testid="identity">
          <span title="Tenant">{identity.tenant || "operator"}</span>
          <span className="scopes">{formatScopes(identity.scopes)}</span>
          <button type="button" onClick={logOut}>
            Log out
          </button>
        </div>
      </header>
      {!online && (
        <p className="offline" role="alert">
          You are offline: the console cannot reach the gateway. What you see may be out of date.
        </p>
      )}
      <main id="main" tabIndex={-1}>
        <Suspense fallback={<Loading />}>
          {page === "agents" && <AgentsPage />}
          {page === "try" && <TryItPage />}
          {page === "voice" && <VoicePage />}
          {page === "usage" && <UsagePage />}
          {page === "keys" && <ApiKeysPage />}
          {page === "limits" && <LimitsPage />}
        </Suspense>
      </main>
    </div>
  );
}

export default function App() {
  return (
    <ToastProvider>
      <SessionProvider>
        <Shell />
      </SessionProvider>
    </ToastProvider>
  );
}
