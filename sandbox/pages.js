// The pages and small helpers the sandbox's two oidc-provider servers (idp.js, the account IdP;
// mcp-auth-server.js, the remote MCP servers' authorization server) share: an HTML-escaped
// sign-in form that the testkit and the window tests drive, the error page, and reading a body.
// Dev/test tooling only, never shipped.

export const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
})[c]);

/**
 * The sign-in form of interaction `uid`, posting to `/interaction/{uid}/login`.
 * @param {string} uid
 * @param {{title: string, heading: string, error?: string}} text
 */
export function signInPage(uid, { title, heading, error }) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<main>
<h1>${escapeHtml(heading)}</h1>
${error ? `<p role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<label for="login">Login</label> <input id="login" name="login" type="text" required autofocus>
<label for="password">Password</label> <input id="password" name="password" type="password" required>
<button type="submit">Sign in</button>
</form>
</main>
</body></html>`;
}

/** oidc-provider's `renderError`: the error and its description, escaped. */
export function errorPage(out) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Error</title></head><body><h1>${escapeHtml(out.error)}</h1><p>${escapeHtml(out.error_description ?? '')}</p></body></html>`;
}

/** The whole request body as UTF-8. */
export async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}
