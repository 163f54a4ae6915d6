// *Services* → *Add* / *Edit* (`crates/core/src/config/services.rs`): the form's values, the
// request sent, and the checks made before anything is sent. The configuration's own rules (and
// their texts) are applied by the core; these only catch an empty field.
import type { MappingForm, ServiceForm, ServiceSource, ServiceStatus } from './types';

export type { ServiceSource };

/** One credential mapping as sent (`MappingForm`, generated). */
export type ServiceMapping = MappingForm;

/** What *Add* / *Edit* sends (`ServiceForm`, generated); on edit, absent endpoint or mappings stay as written. */
export type ServiceRequest = ServiceForm;

/** The form's fields, as typed. One mapping: a header (with a prefix) or a query parameter. */
export interface ServiceFormValues {
  name: string;
  account: string;
  source: ServiceSource;
  gateway_endpoint: string;
  upstream: string;
  allow_loopback_http: boolean;
  credential: string;
  inject: 'header' | 'query';
  header: string;
  prefix: string;
  query_param: string;
  ttl_seconds: string;
}

export type ServiceField = keyof ServiceRequest;

/** Fields of a new service: a Bearer access token of the first account. */
export function emptyService(account: string): ServiceFormValues {
  return {
    name: '',
    account,
    source: 'access_token',
    gateway_endpoint: '',
    upstream: '',
    allow_loopback_http: false,
    credential: 'access_token',
    inject: 'header',
    header: 'Authorization',
    prefix: 'Bearer ',
    query_param: '',
    ttl_seconds: '',
  };
}

/** Fields of an existing service; the endpoint and mapping stay blank, meaning "keep as written". */
export function serviceToForm(s: ServiceStatus): ServiceFormValues {
  return {
    ...emptyService(s.account),
    name: s.name,
    source: s.source,
    upstream: s.upstream,
    allow_loopback_http: s.upstream.startsWith('http://'),
    credential: '',
    header: '',
    prefix: '',
    ttl_seconds: String(s.ttl_seconds),
  };
}

/** The request for the form's values; `editing` leaves a blank endpoint or mapping unchanged. */
export function serviceRequest(v: ServiceFormValues, editing: boolean): ServiceRequest {
  const request: ServiceRequest = {
    name: v.name.trim(),
    account: v.account.trim(),
    source: v.source,
    upstream: v.upstream.trim(),
    allow_loopback_http: v.allow_loopback_http,
  };
  if (v.source === 'gateway' && (v.gateway_endpoint.trim() || !editing)) {
    request.gateway_endpoint = v.gateway_endpoint.trim();
  }
  if (v.credential.trim() || !editing) {
    const mapping: ServiceMapping = { name: v.credential.trim() };
    if (v.inject === 'header') {
      mapping.header = v.header.trim();
      if (v.prefix) mapping.prefix = v.prefix;
    } else {
      mapping.query_param = v.query_param.trim();
    }
    request.credentials = [mapping];
  }
  const ttl = Number(v.ttl_seconds.trim());
  if (v.ttl_seconds.trim() && Number.isInteger(ttl) && ttl >= 0) request.ttl_seconds = ttl;
  return request;
}

/** Problems to show before sending, by field; `null` when there is none. */
export function checkService(v: ServiceFormValues, editing: boolean): Partial<Record<ServiceField, string>> | null {
  const problems: Partial<Record<ServiceField, string>> = {};
  if (!v.name.trim()) problems.name = 'Enter a name: it becomes the proxy path /name/….';
  if (!v.account.trim()) problems.account = 'Choose the account whose login unlocks this service.';
  if (!v.upstream.trim()) problems.upstream = 'Enter the upstream URL, such as https://api.example.com.';
  if (v.source === 'gateway' && !v.gateway_endpoint.trim() && !editing) {
    problems.gateway_endpoint = 'Enter the Auth Gateway path, such as /api/v1/credentials/github.';
  }
  const ttl = v.ttl_seconds.trim();
  if (ttl && !(Number.isInteger(Number(ttl)) && Number(ttl) >= 1)) {
    problems.ttl_seconds = 'Enter a whole number of seconds (at least 1), or leave it empty for the default.';
  }
  if (!editing || v.credential.trim()) {
    if (!v.credential.trim()) problems.credentials = 'Name the credential, e.g. "token" or "access_token".';
    else if (v.inject === 'header' && !v.header.trim()) problems.credentials = 'Name the header, e.g. "Authorization".';
    else if (v.inject === 'query' && !v.query_param.trim()) problems.credentials = 'Name the query parameter, e.g. "api_key".';
  }
  return Object.keys(problems).length ? problems : null;
}
