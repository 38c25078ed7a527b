# covers: a file Ansible never loads (its name or place)
level: ignored-sh
