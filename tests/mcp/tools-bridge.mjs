// Tools that exercise everything MCP Streamable HTTP carries besides request → answer, for the
// stdio bridge's test (registered by server-http.mjs --resumable):
//   announce     sends notifications/message and notifications/tools/list_changed outside any
//                request (on the standalone GET stream);
//   ask          asks the client a question with elicitation during the call, answers with it;
//   roots        asks the client for its roots outside the request (GET stream), answers with them;
//   interrupted  sends progress 1, closes its SSE response on purpose, sends progress 2..n and the
//                result: the client only gets them by resuming with Last-Event-ID.
import { z } from 'zod';
import { ElicitResultSchema } from '@modelcontextprotocol/sdk/types.js';

/** Resolves once `ready()` is true, polling every 10 ms; rejects after `ms`. */
const until = (ready, ms, what) => new Promise((resolve, reject) => {
  const deadline = Date.now() + ms;
  const check = () => {
    if (ready()) return resolve();
    if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
    setTimeout(check, 10);
  };
  check();
});

/**
 * `listening(sessionId)` says whether the session's standalone GET stream is open: messages sent
 * outside a request before that are stored, not delivered, so the tools wait for it.
 */
export function registerBridgeTools(mcp, { listening }) {
  const standalone = (extra) => until(() => listening(extra.sessionId), 10_000, 'the standalone GET stream');
  mcp.registerTool(
    'announce',
    { description: 'Sends a log message and tools/list_changed outside the request', inputSchema: {} },
    async (_args, extra) => {
      await standalone(extra);
      await mcp.server.sendLoggingMessage({ level: 'info', logger: 'server-http', data: 'announced' }, extra.sessionId);
      mcp.sendToolListChanged();
      return { content: [{ type: 'text', text: 'announced' }] };
    },
  );
  mcp.registerTool(
    'ask',
    { description: 'Asks the client a question (elicitation) and answers with its reply', inputSchema: { question: z.string() } },
    async ({ question }, extra) => {
      const reply = await extra.sendRequest(
        {
          method: 'elicitation/create',
          params: {
            mode: 'form',
            message: question,
            requestedSchema: { type: 'object', properties: { answer: { type: 'string' } }, required: ['answer'] },
          },
        },
        ElicitResultSchema,
      );
      if (reply.action !== 'accept') return { content: [{ type: 'text', text: `declined: ${reply.action}` }], isError: true };
      return { content: [{ type: 'text', text: `the client said: ${reply.content.answer}` }] };
    },
  );
  mcp.registerTool(
    'roots',
    { description: "Lists the client's roots with a request outside the call", inputSchema: {} },
    async (_args, extra) => {
      await standalone(extra);
      const { roots } = await mcp.server.listRoots();
      return { content: [{ type: 'text', text: roots.map((r) => r.uri).join(' ') }] };
    },
  );
  mcp.registerTool(
    'interrupted',
    { description: 'Progress 1..n with its SSE response closed after the first', inputSchema: { n: z.number().int().min(2).max(50) } },
    async ({ n }, extra) => {
      const progressToken = extra._meta?.progressToken;
      if (progressToken === undefined) throw new Error('call interrupted with a progress token');
      if (!extra.closeSSEStream) throw new Error('the stream cannot be resumed (no event store, or protocol < 2025-11-25)');
      const progress = (i) => extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress: i, total: n } });
      await progress(1);
      extra.closeSSEStream();
      process.stdout.write(`${JSON.stringify({ event: 'closed-stream', session: extra.sessionId })}\n`);
      for (let i = 2; i <= n; i += 1) await progress(i);
      return { content: [{ type: 'text', text: `interrupted ${n}` }] };
    },
  );
}
