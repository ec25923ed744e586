/** Read models of Backup > Jobs: the list (or, for a refused filter, what its form offers) and a job's page. */
import { hostnamesById } from "../hosts.ts";
import { getJob, type JobFilter, listJobRuns, listJobs, listJobSources } from "../job_views.ts";
import type { Actor } from "../rbac.ts";
import { getOrg } from "../tenancy.ts";
import { readPage } from "./paging.ts";
import { accountOrgs, type Data } from "./common.ts";

/** The jobs on the filter's page with the filter's choices; `filter` null (refused): only the choices. */
export async function getJobList(
  kv: Deno.Kv,
  actor: Actor,
  params: { filter: JobFilter | null },
  _now: Date,
) {
  const { orgs, orgName } = await accountOrgs(kv, actor);
  if (!params.filter) return { orgs, orgName, jobs: null, sources: await listJobSources(kv, actor) };
  const jobs = await listJobs(kv, actor, params.filter);
  return { orgs, orgName, jobs, sources: jobs.sources };
}

/** A job's page: the job, its run history page (the first when `cursor` is refused), its org and host names. */
export async function getJobDetail(
  kv: Deno.Kv,
  actor: Actor,
  params: { jobId: string; page: { cursor: string; limit: number } },
  _now: Date,
) {
  const { job, policy, platform, retry } = await getJob(kv, actor, params.jobId);
  const { page } = params;
  const [{ page: history, staleCursor }, org] = await Promise.all([
    readPage(page.cursor, (cursor) => listJobRuns(kv, actor, job.id, { ...page, cursor })),
    job.orgId ? getOrg(kv, job.orgId) : Promise.resolve(null),
  ]);
  const hosts = await hostnamesById(kv, history.values.map((r) => r.hostId));
  return { job, policy, platform, retry, history, staleCursor, org, hosts };
}
export type JobDetail = Data<typeof getJobDetail>;
