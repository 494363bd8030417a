"""Tests of the planner: scheduler, replication, node lifecycle."""
