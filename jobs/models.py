# Jobs are RQ jobs on the state role (jobs/queues.py); no database models yet.
