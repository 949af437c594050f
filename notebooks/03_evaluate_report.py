# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Evaluate and report
# MAGIC
# MAGIC Scores each run's best checkpoint on a split (sample-based P, R, F1, F2), writes the
# MAGIC Table-4 report next to the paper's numbers and shows the plots. Tracked runs get the
# MAGIC metrics, per-class F1, plots and `report.md` in MLflow.

# COMMAND ----------

from bigearthnet import notebooks as nb

nb.declare(dbutils.widgets, "03_evaluate_report")

# COMMAND ----------

report = nb.evaluate_and_report(dbutils.widgets)
nb.show_report(report, display)
print(f"report written to {report.report}")
