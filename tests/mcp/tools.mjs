// The tools both test servers offer, registered on an McpServer from the official SDK.
import { createHash } from 'node:crypto';
import { z } from 'zod';

/** First 12 hex digits of SHA-256: enough to compare a secret without revealing it. */
export const fingerprint = (value) =>
  value ? createHash('sha256').update(value).digest('hex').slice(0, 12) : 'missing';

/**
 * echo, count (streams progress notifications) and whoami. `whoami(extra)` returns the object the
 * whoami tool answers with; by default the fingerprint of env DEMO_API_KEY (the stdio server).
 */
export function registerTools(server, { whoami = () => ({ fingerprint: fingerprint(process.env.DEMO_API_KEY) }) } = {}) {
  server.registerTool(
    'echo',
    { description: 'Echoes text back', inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: 'text', text }] }),
  );
  server.registerTool(
    'count',
    { description: 'Counts to n, sending a progress notification per step', inputSchema: { n: z.number().int().min(1).max(100) } },
    async ({ n }, extra) => {
      const progressToken = extra?._meta?.progressToken;
      for (let i = 1; i <= n; i += 1) {
        if (progressToken !== undefined) {
          await extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress: i, total: n } });
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return { content: [{ type: 'text', text: `counted ${n}` }] };
    },
  );
  server.registerTool(
    'whoami',
    { description: 'Fingerprint of the API key this server received', inputSchema: {} },
    async (_args, extra) => ({ content: [{ type: 'text', text: JSON.stringify(whoami(extra)) }] }),
  );
}
