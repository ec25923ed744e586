/** Every island by the name its server marker carries. */
import type { ComponentType } from "preact";
import BackupProgress from "./BackupProgress.tsx";
import CapacityChart from "./CapacityChart.tsx";
import CapacityWidget from "./CapacityWidget.tsx";
import CopySecret from "./CopySecret.tsx";
import CronField from "./CronField.tsx";
import DashboardSection from "./DashboardSection.tsx";
import OrgScopePicker from "./OrgScopePicker.tsx";
import RetryJob from "./RetryJob.tsx";

// deno-lint-ignore no-explicit-any
export const ISLANDS: Record<string, ComponentType<any>> = {
  BackupProgress,
  CapacityChart,
  CapacityWidget,
  CopySecret,
  CronField,
  DashboardSection,
  OrgScopePicker,
  RetryJob,
};
