/** Every island by the name its server marker carries. */
import type { ComponentType } from "preact";
import BackupProgress from "./BackupProgress.tsx";
import BesTargetFields from "./BesTargetFields.tsx";
import BrowseTree from "./BrowseTree.tsx";
import CapacityChart from "./CapacityChart.tsx";
import CapacityWidget from "./CapacityWidget.tsx";
import CopySecret from "./CopySecret.tsx";
import CronField from "./CronField.tsx";
import DashboardSection from "./DashboardSection.tsx";
import OrgScopePicker from "./OrgScopePicker.tsx";
import RestoreProgress from "./RestoreProgress.tsx";
import RestoreSearch from "./RestoreSearch.tsx";
import RetryJob from "./RetryJob.tsx";
import SelectedPaths from "./SelectedPaths.tsx";
import SetupTicks from "./SetupTicks.tsx";

// deno-lint-ignore no-explicit-any
export const ISLANDS: Record<string, ComponentType<any>> = {
  BackupProgress,
  BesTargetFields,
  BrowseTree,
  CapacityChart,
  CapacityWidget,
  CopySecret,
  CronField,
  DashboardSection,
  OrgScopePicker,
  RestoreProgress,
  RestoreSearch,
  RetryJob,
  SelectedPaths,
  SetupTicks,
};
