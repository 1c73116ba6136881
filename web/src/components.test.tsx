import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import type { ReactNode } from "react";
import { afterEach, describe, expect, it, vi } from "vitest";
import App from "./App";
import { AgentForm } from "./pages/Agents";
import { LimitsPage } from "./pages/Limits";
import { VoicePage } from "./pages/Voice";
import { KEY_STORAGE, SessionProvider } from "./session";
import { ToastProvider, useToast } from "./toast";

type Route = (url: string, init: RequestInit) => [number, unknown] | undefined;

/** fetch answering from `route`, like the gateway: JSON bodies and an x-request-id header. */
function gateway(route: Route) {
  const calls: { url: string; init: RequestInit }[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string, init: RequestInit) => {
      calls.push({ url, init });
      const [status, body] = route(url, init) ?? [404, status404("METHOD_NOT_FOUND")];
      return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", "x-request-id": "rid-7" } });
    }),
  );
  return calls;
}

function status404(reason: string) {
  return { code: 5, message: "No API method here.", details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason }] };
}

const ME = { tenant: "tenants/ten_1", apiKey: "apiKeys/key_1", scopes: ["SCOPE_ADMIN"] };

function withProviders(children: ReactNode) {
  return (
    <ToastProvider>
      <SessionProvider>{children}</SessionProvider>
    </ToastProvider>
  );
}

afterEach(() => {
  vi.unstubAllGlobals();
  window.location.hash = "";
});

describe("login", () => {
  it("refuses a bad key with a clear message and keeps nothing", async () => {
    gateway((url) =>
      url === "/v1/me"
        ? [401, { code: 16, message: "The API key is not valid.", details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "API_KEY_INVALID" }] }]
        : undefined,
    );
    render(<App />);
    await userEvent.type(screen.getByLabelText("API key"), "vb_wrong");
    await userEvent.click(screen.getByRole("button", { name: "Log in" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("This key was refused (API_KEY_INVALID): The API key is not valid.");
    expect(screen.getByLabelText("API key")).toHaveAttribute("aria-invalid", "true");
    expect(sessionStorage.getItem(KEY_STORAGE)).toBeNull();
  });

  it("logs in: the key goes to sessionStorage and every request carries it; the tenant and scopes are shown", async () => {
    const calls = gateway((url) => (url === "/v1/me" ? [200, ME] : url.startsWith("/v1/agents") ? [200, { agents: [], nextPageToken: "" }] : undefined));
    render(<App />);
    await userEvent.type(screen.getByLabelText("API key"), "vb_good");
    await userEvent.click(screen.getByRole("button", { name: "Log in" }));
    expect(await screen.findByTestId("identity")).toHaveTextContent("tenants/ten_1admin");
    expect(await screen.findByText(/No agents yet/)).toBeInTheDocument();
    expect(sessionStorage.getItem(KEY_STORAGE)).toBe("vb_good");
    expect(new Headers(calls.at(-1)!.init.headers).get("Authorization")).toBe("Bearer vb_good");
    await userEvent.click(screen.getByRole("button", { name: "Log out" }));
    expect(screen.getByLabelText("API key")).toBeInTheDocument();
    expect(sessionStorage.getItem(KEY_STORAGE)).toBeNull();
  });
});

describe("agent form", () => {
  it("shows each field violation on its field", async () => {
    gateway(() => undefined);
    const onSubmit = vi.fn(async () => {
      const { errorFromBody } = await import("./api/client");
      throw errorFromBody(400, {
        code: 3,
        message: "invalid",
        details: [
          { "@type": "type.googleapis.com/google.rpc.BadRequest", fieldViolations: [{ field: "agent.primary_provider", description: "unknown provider; must be one of: vendorA, vendorB" }] },
        ],
      }, "");
    });
    render(withProviders(<AgentForm initial={{ displayName: "A", systemPrompt: "", primaryProvider: "x", fallbackProvider: "", model: "" }} submitLabel="Create agent" onSubmit={onSubmit} />));
    await userEvent.click(screen.getByRole("button", { name: "Create agent" }));
    const primary = screen.getByLabelText("Primary provider");
    await waitFor(() => expect(primary).toHaveAttribute("aria-invalid", "true"));
    expect(primary).toHaveAccessibleDescription(/unknown provider/);
    expect(screen.getByLabelText("Display name")).toHaveAttribute("aria-invalid", "false");
  });
});

describe("pages whose API is not on the server", () => {
  it("voice: says it is not available when the gateway answers 503", async () => {
    sessionStorage.setItem(KEY_STORAGE, "vb_good");
    gateway((url) =>
      url === "/v1/me"
        ? [200, ME]
        : url.endsWith("voice:converse")
          ? [503, { code: 14, message: "The service is unavailable; try again later.", details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "SERVICE_UNAVAILABLE" }] }]
          : undefined,
    );
    render(withProviders(<VoicePage />));
    expect(await screen.findByTestId("unavailable")).toHaveTextContent("Voice is not available on this server.");
    expect(screen.getByTestId("unavailable")).toHaveTextContent("HTTP 503 SERVICE_UNAVAILABLE");
    expect(screen.queryByRole("button", { name: "Record" })).toBeNull();
  });

  it("voice: a service that refuses the probe exists, so recording is offered", async () => {
    gateway((url) =>
      url.endsWith("voice:converse")
        ? [404, status404("SESSION_NOT_FOUND")]
        : url.startsWith("/v1/agents")
          ? [200, { agents: [{ name: "agents/agt_1", displayName: "Support", primaryProvider: "vendorA", fallbackProvider: "" }] }]
          : url.startsWith("/v1/sessions")
            ? [200, { sessions: [] }]
            : undefined,
    );
    render(withProviders(<VoicePage />));
    expect(await screen.findByRole("button", { name: "New session" })).toBeInTheDocument();
    expect(screen.queryByTestId("unavailable")).toBeNull();
  });

  it("limits and budgets: 404 METHOD_NOT_FOUND is 'not available'", async () => {
    gateway(() => undefined);
    render(withProviders(<LimitsPage />));
    expect(await screen.findByTestId("unavailable")).toHaveTextContent("Limits and budgets is not available on this server.");
    expect(screen.getByTestId("unavailable")).toHaveTextContent("rid-7");
  });
});

describe("toasts", () => {
  it("carry the reason and the request id", async () => {
    function Fail() {
      const toast = useToast();
      return (
        <button
          type="button"
          onClick={async () => {
            const { errorFromBody } = await import("./api/client");
            toast.error(errorFromBody(409, { code: 10, message: "changed meanwhile", details: [{ "@type": "google.rpc.ErrorInfo", reason: "ETAG_MISMATCH" }, { "@type": "google.rpc.RequestInfo", requestId: "abc-123" }] }, ""), "Save");
          }}
        >
          go
        </button>
      );
    }
    render(withProviders(<Fail />));
    await userEvent.click(screen.getByRole("button", { name: "go" }));
    const toast = await screen.findByRole("alert");
    expect(toast).toHaveTextContent("Save: changed meanwhile");
    expect(toast).toHaveTextContent("Reason: ETAG_MISMATCH (HTTP 409)");
    expect(toast).toHaveTextContent("Request id: abc-123");
    await userEvent.click(screen.getByRole("button", { name: "Dismiss notification" }));
    expect(screen.queryByRole("alert")).toBeNull();
  });
});
